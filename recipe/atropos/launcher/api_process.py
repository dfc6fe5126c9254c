"""A real Atropos `run-api` server owned by this process (started and stopped by PID), behind the
run's token (launcher/run_api_server.py)."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import requests

from recipe.atropos.auth.run_token import TOKEN_ENV
from recipe.atropos.launcher.managed_process import ManagedProcess
from recipe.atropos.launcher.run_api_server import HEALTH_PATH
from recipe.atropos.net import direct_http
from recipe.atropos.net.addresses import advertised_host, http_url


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunApiProcess(ManagedProcess):
    """atroposlib's `run-api` app behind the token on HOST:PORT; use as a context manager.

    Args:
        host: bind address; loopback unless the caller means otherwise.
        advertise_host: the address clients are told (`url`); None: the bind address, or this node's
            when bound to every interface (net/addresses.py).
        port: TCP port; a free loopback port when None.
        log_path: file receiving the server's output (discarded when None).
        token: the run's secret, handed over in the child's environment; None: the one this process
            has in ATROPOS_RUN_TOKEN / ATROPOS_RUN_TOKEN_FILE (the server refuses to start without one
            unless `allow_no_token`).
        max_body_mb: largest request body the server accepts.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None,
                 token: str | None = None, allow_no_token: bool = False, max_body_mb: float | None = None,
                 advertise_host: str | None = None) -> None:
        self.host = host
        self.advertised_host = advertised_host(host, advertise_host, bind_setting="api.host",
                                               advertise_setting="api.advertise_host")
        self.port = port or free_loopback_port()
        command = [sys.executable, "-m", "recipe.atropos.launcher.run_api_server", "--host", host,
                   "--port", str(self.port)]
        if allow_no_token:
            command.append("--allow-no-token")
        if max_body_mb is not None:
            command += ["--max-body-mb", str(max_body_mb)]
        super().__init__("run-api", command, log_path=log_path, env={TOKEN_ENV: token} if token else None)

    @property
    def url(self) -> str:
        return http_url(self.advertised_host, self.port)

    def start(self, ready_timeout: float = 60.0) -> RunApiProcess:
        super().start()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"run-api exited with code {self.process.returncode} before serving {self.url}")
            try:
                if direct_http.get(f"{self.url}{HEALTH_PATH}", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"run-api did not answer at {self.url} within {timeout:.0f}s")
