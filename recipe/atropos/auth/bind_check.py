"""Which bind addresses need the run's token: every one but loopback."""

from __future__ import annotations

import ipaddress


class InsecureBindError(ValueError):
    """A listener would accept requests from other hosts without authentication."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_bind(host: str, token: str | None, setting: str) -> None:
    """Refuse to listen on `host` beyond loopback without a token; `setting` names the bind key."""
    if token is None and not is_loopback(host):
        raise InsecureBindError(f"{setting}={host} listens beyond loopback but the run has no token: set "
                                "ATROPOS_RUN_TOKEN (or ATROPOS_RUN_TOKEN_FILE) to the run's secret, as the launcher "
                                "does, or bind to 127.0.0.1")
