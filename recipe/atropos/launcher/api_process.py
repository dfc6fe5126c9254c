"""A real Atropos `run-api` server owned by this process (started and stopped by PID)."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import requests

from recipe.atropos.launcher.managed_process import ManagedProcess


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_api_command() -> list[str]:
    script = Path(sys.executable).with_name("run-api")
    if script.exists():
        return [str(script)]
    found = shutil.which("run-api")
    if found is None:
        raise FileNotFoundError("`run-api` (atroposlib's console script) is not installed in this environment")
    return [found]


class RunApiProcess(ManagedProcess):
    """`run-api --host HOST --port PORT`; use as a context manager.

    Args:
        host: bind address; loopback unless the caller means otherwise.
        port: TCP port; a free loopback port when None.
        log_path: file receiving the server's output (discarded when None).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_loopback_port()
        super().__init__("run-api", [*_run_api_command(), "--host", host, "--port", str(self.port)], log_path=log_path)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
                if requests.get(f"{self.url}/", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"run-api did not answer at {self.url} within {timeout:.0f}s")
