"""Trajectory truncation keeps what it promises (atroposlib pull request #483, never merged).

`ensure_trajectory_token_limit` (multi-step environments: blackjack, the game environments) pops the
same number of old messages from every alternative of a step, also from alternatives already down
to the system prompt, last observation and last answer it promises to keep. A short alternative
beside a long one loses its observation and answer, or the whole step is discarded on the next
round ("List too short"). The message lists it works on refuse a pop below that minimum, which is
the pull request's per-alternative cap.
"""

from __future__ import annotations

import functools
from typing import Any

from atroposlib.utils import message_history_utils

from recipe.atropos.envs.atropos_compat.replace_once import replace_once

_ANSWER_ROLES = ("agent", "assistant")


def poppable(messages: list[dict]) -> int:
    """How many messages after the system prompt truncation may remove (atroposlib's own count)."""
    kept_at_end = 0
    if len(messages) > 1 and messages[-1]["role"] in _ANSWER_ROLES:
        kept_at_end = 1
        if len(messages) > 2 and messages[-2]["role"] == "environment":
            kept_at_end = 2
    return len(messages) - 1 - kept_at_end


class _KeepsMinimum(list):
    """A message list whose copies are too, and whose pop(1) does nothing once only the minimum is left."""

    def copy(self) -> "_KeepsMinimum":
        return _KeepsMinimum(self)

    def pop(self, index: int = -1) -> Any:
        if index == 1 and poppable(self) <= 0:
            return None
        return super().pop(index)


def _guarded(step: Any) -> Any:
    if not isinstance(step, dict) or not step.get("messages"):
        return step
    return {**step, "messages": [_KeepsMinimum(alt) if isinstance(alt, list) else alt for alt in step["messages"]]}


def _keeping_the_minimum(original: Any) -> Any:
    @functools.wraps(original)
    def ensure_trajectory_token_limit(trajectory: list, tokenizer: Any, max_trajectory_tokens: int) -> list:
        result = original([_guarded(step) for step in trajectory or []] if trajectory else trajectory,
                          tokenizer, max_trajectory_tokens)
        for step in result or []:
            if isinstance(step, dict) and step.get("messages"):
                step["messages"] = [list(alt) if isinstance(alt, list) else alt for alt in step["messages"]]
        return result

    return ensure_trajectory_token_limit


def install() -> bool:
    """Wrap `atroposlib.utils.message_history_utils.ensure_trajectory_token_limit`; True when active."""
    return replace_once(message_history_utils, "ensure_trajectory_token_limit", _keeping_the_minimum)
