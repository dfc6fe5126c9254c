"""Which environment a request comes from: `/env-<name>/...` in front of the policy server's routes.

Atropos environments send no name with their inference requests, so the launcher gives each its
own base URL (`<server>/env-<name>/v1`); this ASGI wrapper takes the prefix off before the routes
and the token check see the path, and holds the name in `REQUEST_ENVIRONMENT` for the request
(admission control keeps one window per environment). A path without the prefix, or a name that is
not `[A-Za-z0-9_.-]{1,64}`, is served as it is, from no named environment. (`env-` and the name make
one segment: atroposlib's vLLM and SGLang clients remove every `/v1` from their base URL, which a
segment of its own starting with the name, e.g. `/v1x`, would lose.)
"""

from __future__ import annotations

import contextvars
import re
from typing import Any

REQUEST_ENVIRONMENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_environment", default=None)
_NAME = r"[A-Za-z0-9_.-]{1,64}"
_PREFIX = re.compile(rf"^/env-({_NAME})(/.*)$")


def environment_path(name: str) -> str:
    """The path prefix of environment `name`'s requests."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"environment name {name!r} cannot name a policy server path: use [A-Za-z0-9_.-], at most 64")
    return f"/env-{name}"


class EnvironmentPaths:
    """Wraps `app` (module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = _PREFIX.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            return await self.app(scope, receive, send)
        name, rest = match.groups()
        scope = {**scope, "path": rest, "raw_path": rest.encode()}
        token = REQUEST_ENVIRONMENT.set(name)
        try:
            return await self.app(scope, receive, send)
        finally:
            REQUEST_ENVIRONMENT.reset(token)
