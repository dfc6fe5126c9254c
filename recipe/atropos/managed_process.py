"""A child process this program owns: its own process group, its own log file, stopped by PID."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


class ManagedProcess:
    """Start `command` in a new session (so its children share its process group) and stop exactly
    that group: SIGTERM, then SIGKILL after `stop_timeout`. Never matches processes by name."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env, cwd=self.cwd
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        logger.info("started %s (pid %d): %s", self.name, self.process.pid, " ".join(self.command))
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process group; returns the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.process.pid, sig)  # start_new_session: the group id is the child's pid
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("%s (pid %d) ignored %s", self.name, self.process.pid, sig.name)
        else:
            self._kill_leftover_group()
        return self.process.returncode

    def _kill_leftover_group(self) -> None:
        """The leader exited; children it left in its group are still ours to stop."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
