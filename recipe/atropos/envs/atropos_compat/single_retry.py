"""A chat completion is tried 3 times, not 3 x 3 (atroposlib pull request #487, never merged).

atroposlib 0.4.0 wraps `APIServer.chat_completion` in a 3-attempt retry around `_chat_comp` /
`_chat_eval`, which retry 3 times each: a failing policy server (its weight-sync gate answering 503,
a restart) gets up to 9 requests per call instead of 3, each after a back-off, and the environment
waits correspondingly longer before it gives the item up. The outer retry goes; the inner ones (and
their statistics) stay. No subclass in atroposlib overrides `chat_completion`.
"""

from __future__ import annotations

from atroposlib.envs.server_handling.server_baseline import APIServer

from recipe.atropos.envs.atropos_compat.replace_once import replace_once


def install() -> bool:
    """Replace `APIServer.chat_completion` with the function its outer retry wraps (tenacity keeps it as
    `__wrapped__`); True when active."""
    return replace_once(APIServer, "chat_completion", lambda decorated: decorated.__wrapped__)
