"""A child process this program owns: its own process group, its own log file, stopped by PID."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)


class ManagedProcess:
    """Start `command` in a new session (so its children share its process group) and stop exactly
    that group: SIGTERM, then SIGKILL after `stop_timeout`. Descendants seen by `track_children`
    that left the group (their own session) are stopped by PID too. Never matches processes by name."""

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
        self._children: dict[int, psutil.Process] = {}

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

    def track_children(self) -> None:
        """Remember the current descendants (call now and then: a child that left the group and
        outlived its parent can only be found by the PID remembered here)."""
        if not self.running():
            return
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self._children.setdefault(child.pid, child)
        except psutil.Error:
            pass

    def known_pids(self) -> list[int]:
        """This process and every descendant seen so far."""
        return ([self.process.pid] if self.process else []) + sorted(self._children)

    def alive_pids(self) -> list[int]:
        """Those of `known_pids` still running (same process, not a reused PID)."""
        alive = []
        if self.running():
            alive.append(self.process.pid)
        for pid, child in self._children.items():
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                pass
        return alive

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process group and any tracked descendant; returns the exit code (None if never started)."""
        if self.process is None:
            return None
        self.track_children()
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
        self._kill_leftover_children()
        return self.process.returncode

    def _kill_leftover_children(self) -> None:
        for pid, child in self._children.items():
            try:
                if child.is_running():
                    logger.warning("%s: descendant pid %d outlived its group; killing it", self.name, pid)
                    child.kill()
                    child.wait(5)
            except psutil.Error:
                pass

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
