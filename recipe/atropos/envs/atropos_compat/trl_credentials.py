"""`--openai.server_type trl` sends the environment's API key, and fails on an error answer.

atroposlib 0.4.0's `TrlVllmServer` posts `trl vllm-serve`'s `/generate/` with a bare
`aiohttp.ClientSession()`: no Authorization header (the policy server refuses it: it needs the
run's token, `--openai.api_key`), and no status check (an error answer surfaces as
`KeyError: 'completion_ids'`). The sessions its two methods open get a Bearer header with the
server's `api_key` and raise on a 4xx/5xx answer; nothing else of the module changes.
"""

from __future__ import annotations

import contextvars
import functools
import types
from typing import Any

import aiohttp
from atroposlib.envs.server_handling import trl_vllm_server
from atroposlib.envs.server_handling.trl_vllm_server import TrlVllmServer

_MARK = "_atropos_compat_trl_credentials"
_api_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("trl_api_key", default=None)


def _session(*args: Any, headers: dict | None = None, **kwargs: Any) -> aiohttp.ClientSession:
    key = _api_key.get()
    if key:
        headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    return aiohttp.ClientSession(*args, headers=headers, raise_for_status=True, **kwargs)


def _with_key(method: Any) -> Any:
    @functools.wraps(method)
    async def call(self: TrlVllmServer, **kwargs: Any) -> Any:
        token = _api_key.set(self.config.api_key)
        try:
            return await method(self, **kwargs)
        finally:
            _api_key.reset(token)

    return call


def install() -> bool:
    """Patch the module's aiohttp and wrap the two request methods; True when active."""
    if getattr(TrlVllmServer, _MARK, False):
        return True
    trl_vllm_server.aiohttp = types.SimpleNamespace(ClientSession=_session, ClientTimeout=aiohttp.ClientTimeout)
    for name in ("_chat_completion_wrapper", "_completion_wrapper"):
        setattr(TrlVllmServer, name, _with_key(getattr(TrlVllmServer, name)))
    setattr(TrlVllmServer, _MARK, True)
    return True
