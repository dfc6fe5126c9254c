"""The run's one secret: where it comes from and how clients present it.

Every listener of a run (`run-api` behind `launcher/run_api_server.py`, the trainer's policy
server) accepts requests that carry the run's token; every client of ours sends it as an
`Authorization: Bearer` header. The token reaches a process through its environment
(`ATROPOS_RUN_TOKEN`) or a file only its user can read (`ATROPOS_RUN_TOKEN_FILE`), never through a
command line (`ps` shows those to every user of the host).
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

TOKEN_ENV = "ATROPOS_RUN_TOKEN"
TOKEN_FILE_ENV = "ATROPOS_RUN_TOKEN_FILE"
# The user name atroposlib environments put in front of the token in their rollout_server_url
# (`http://atropos:<token>@host:port`); any name is accepted, only the password is checked.
BASIC_AUTH_USER = "atropos"
_MIN_TOKEN_CHARS = 16


class RunTokenError(ValueError):
    """The run's token is missing where it is required, unreadable, or too weak (the message says which)."""


def make_run_token() -> str:
    """A fresh secret: 256 random bits, URL-safe (it goes into a Basic-auth URL unescaped)."""
    return secrets.token_urlsafe(32)


def write_token_file(path: str | Path, token: str) -> Path:
    """Write `token` to `path` readable by its owner only (0600), created so, never world-readable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return path


def read_token_file(path: str | Path) -> str:
    """The token in `path`; refuses a file that other users can read or an empty/short token."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise RunTokenError(f"{TOKEN_FILE_ENV}={path}: cannot read the run's token: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RunTokenError(f"{TOKEN_FILE_ENV}={path}: the token file is readable by other users "
                            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")
    return _checked(text, f"{TOKEN_FILE_ENV}={path}")


def _checked(token: str, where: str) -> str:
    if len(token) < _MIN_TOKEN_CHARS or any(c.isspace() or c in ":@/" for c in token):
        raise RunTokenError(f"{where}: the run's token must be at least {_MIN_TOKEN_CHARS} characters without "
                            "spaces, ':', '@' or '/' (make one with: python -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')")
    return token


def run_token() -> str | None:
    """The run's token from `ATROPOS_RUN_TOKEN`, else from the file `ATROPOS_RUN_TOKEN_FILE` names;
    None when neither is set."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return _checked(token.strip(), TOKEN_ENV)
    path = os.environ.get(TOKEN_FILE_ENV)
    return read_token_file(path) if path else None


def ensure_run_token() -> str:
    """The run's token, made and put into this process's environment (inherited by the processes it
    starts) when none is set: for scripts that start a whole run themselves."""
    token = run_token()
    if token is None:
        token = os.environ[TOKEN_ENV] = make_run_token()
    return token


def required_run_token(required: bool, setting: str) -> str | None:
    """`run_token()`, or a RunTokenError naming the variables and `setting` (the switch that turns the
    requirement off) when there is none and `required`. Without a token and not required: None, warned."""
    token = run_token()
    if token is None and required:
        raise RunTokenError(f"no run token: set {TOKEN_ENV} (or {TOKEN_FILE_ENV}, a file of mode 0600) to the run's "
                            f"secret, as the launcher does (<run_dir>/token), or set {setting}=false to run without "
                            "authentication on loopback (anyone on this host can then feed the trainer)")
    if token is None:
        logger.warning("%s=false and no %s: the listeners of this run accept requests from anyone who can reach "
                       "them (loopback only)", setting, TOKEN_ENV)
    return token


def auth_headers(token: str | None) -> dict[str, str]:
    """The header our clients send (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def basic_auth_header(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def url_with_credentials(url: str, token: str | None, user: str = BASIC_AUTH_USER) -> str:
    """`url` with `user:token@` in front of its host: how an unmodified atroposlib environment sends
    the token (its HTTP clients turn URL credentials into a Basic header). Only for environments'
    `--env.rollout_server_url`: a URL is easily logged, so nothing of ours uses this form."""
    if not token:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{token}@{host}"))


def redact(text: str, token: str | None) -> str:
    """`text` with the token replaced by `***` (for what atroposlib prints of its configuration)."""
    return text.replace(token, "***") if token else text
