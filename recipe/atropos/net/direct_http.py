"""HTTP between the run's own processes without a proxy.

`requests` (and httpx) follow HTTP_PROXY/HTTPS_PROXY/ALL_PROXY from the environment; a cluster's proxy
would then sit between the trainer and run-api or the policy server, and see the run's token. Our
sessions ignore those variables, and the environments the launcher starts get the run's own hosts in
NO_PROXY (their OpenAI client is httpx, which honours it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")


def direct_session(headers: Mapping[str, str] | None = None) -> requests.Session:
    """A requests session that never goes through a proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update(headers or {})
    return session


def get(url: str, **kwargs: Any) -> requests.Response:
    with direct_session() as session:
        return session.get(url, **kwargs)


def post(url: str, **kwargs: Any) -> requests.Response:
    with direct_session() as session:
        return session.post(url, **kwargs)


def no_proxy_env(environ: Mapping[str, str], urls: Iterable[str]) -> dict[str, str]:
    """NO_PROXY and no_proxy with the hosts of `urls` added to what `environ` has."""
    hosts = [urlsplit(url).hostname for url in urls]
    present = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    entries = [entry for entry in present.split(",") if entry.strip()]
    merged = ",".join(dict.fromkeys([*entries, *(host for host in hosts if host)]))
    return {name: merged for name in NO_PROXY_VARIABLES}
