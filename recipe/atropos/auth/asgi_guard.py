"""An ASGI wrapper that admits only requests carrying the run's token, within a body-size cap.

It sits in front of an app we do not change (atroposlib's `run-api` app) or one we do (the policy
server), in the same process, so a request that passes costs one header check and no extra hop.
A request is answered before the app sees it when:
- its path is refused outright (403; e.g. `run-api`'s `/reset_data`, which wipes the queue and every
  registration with a plain GET);
- it carries neither `Authorization: Bearer <token>` nor HTTP Basic credentials whose password is
  the token (401; compared in constant time); open paths (a health probe) skip this check;
- its body is larger than `max_body_bytes` (413; read no further than the cap).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


def presented_secret(authorization: str) -> str | None:
    """The secret in an Authorization header value (Bearer, or the password of Basic); None if neither."""
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep else None
    return None


class TokenGuard:
    """Wraps `app` (see the module docstring). `token` None: no authentication (the refused paths and
    the body cap still apply). `on_refused(status, path)` is called for every request answered here."""

    def __init__(self, app: Any, token: str | None, *, max_body_bytes: int, open_paths: Iterable[str] = (),
                 refused_paths: Iterable[str] = (), on_refused: Callable[[int, str], None] | None = None) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.open_paths = frozenset(open_paths)
        self.refused_paths = frozenset(refused_paths)
        self.on_refused = on_refused

    def authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        if self._token is None:
            return True
        for name, value in headers:
            if name.lower() == b"authorization":
                secret = presented_secret(value.decode("latin-1"))
                if secret is not None and hmac.compare_digest(secret.encode(), self._token):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        if scope["type"] != "http":  # neither app serves websockets
            await send({"type": "websocket.close", "code": 1008})
            return
        if path in self.refused_paths:
            return await self._refuse(send, 403, path, f"{path} is disabled on this server")
        if path not in self.open_paths and not self.authorized(scope.get("headers", [])):
            return await self._refuse(send, 401, path, "missing or wrong credentials: send the run's token as "
                                      "'Authorization: Bearer <token>' or as HTTP Basic password",
                                      [(b"www-authenticate", b'Bearer, Basic realm="atropos"')])
        declared = _content_length(scope.get("headers", []))
        if declared is not None and declared > self.max_body_bytes:
            return await self._refuse(send, 413, path, f"body of {declared} bytes exceeds {self.max_body_bytes}")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self._refuse(send, 413, path, f"body exceeds {self.max_body_bytes} bytes")
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, path: str, reason: str,
                      extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
        if self.on_refused is not None:
            self.on_refused(status, path)
        logger.info("refused %s with %d: %s", path, status, reason)
        payload = json.dumps({"detail": reason}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()), *extra_headers]})
        await send({"type": "http.response.body", "body": payload})


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
