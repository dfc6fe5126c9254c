"""Start and stop a real Atropos `run-api` server owned by this process (by PID, never by name)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

logger = logging.getLogger(__name__)


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


class RunApiProcess:
    """`run-api --host HOST --port PORT` as a child process; use as a context manager.

    Args:
        host: bind address; loopback unless the caller means otherwise.
        port: TCP port; a free loopback port when None.
        log_path: file receiving the server's stdout and stderr (discarded when None).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_loopback_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, ready_timeout: float = 60.0) -> RunApiProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [*_run_api_command(), "--host", self.host, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self.wait_ready(ready_timeout)
        logger.info("run-api pid %d serving %s", self.process.pid, self.url)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"run-api exited with code {self.process.returncode} before serving {self.url}")
            try:
                if requests.get(f"{self.url}/", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"run-api did not answer at {self.url} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the server's process group (it was started in its own session), then SIGKILL."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the child's pid
        try:
            os.killpg(pgid, 15)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, 9)
            self.process.wait(timeout=timeout)
        except ProcessLookupError:
            pass

    def __enter__(self) -> RunApiProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
