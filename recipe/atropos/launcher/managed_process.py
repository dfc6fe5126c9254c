"""A child process this program owns: its own process group, its own log file, stopped by PID.

Ownership has no gap: the process is recorded on its ManagedProcess before a shutdown signal can be
acted on (`start` defers SIGINT/SIGTERM while it runs, for handlers that call `defer_if_starting`),
so callers record the ManagedProcess before calling `start`. Stopping is bounded as a whole:
`stop_processes` signals every group at once and waits for all of them within one timeout.

A group id is the leader's pid, and a pid is free for reuse once the leader is reaped and its group
is empty: a group is signalled only while it is provably ours (its leader is still the process we
started, by pid and create time, or a descendant we tracked still lives in it), never by a bare id.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from recipe.atropos.parent_death import signal_on_parent_death

logger = logging.getLogger(__name__)

_KILL_WAIT_S = 5.0  # after SIGKILL: time for the kernel to take the processes down


class _StartGuard:
    """Shutdown signals that arrived while a process was being started (delivered again after)."""

    depth = 0
    pending: int | None = None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    _StartGuard.depth += 1
    try:
        yield
    finally:
        _StartGuard.depth -= 1
        if _StartGuard.depth == 0 and _StartGuard.pending is not None:
            signum, _StartGuard.pending = _StartGuard.pending, None
            os.kill(os.getpid(), signum)  # the handler runs again, now that the child is recorded


def defer_if_starting(signum: int) -> bool:
    """For a signal handler: True (and the signal is delivered again later) while a ManagedProcess
    is between creating its child and recording it."""
    if _StartGuard.depth:
        _StartGuard.pending = signum
        return True
    return False


def raise_on_termination_signals() -> None:
    """Make SIGTERM and SIGHUP raise SystemExit in this (main) thread, so the `with` blocks and
    `finally` clauses that stop the processes a script started run when the script is killed."""
    def handler(signum: int, _frame: object) -> None:
        if not defer_if_starting(signum):
            raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


class ManagedProcess:
    """Start `command` in a new session (so its children share its process group) and stop exactly
    that group and the descendants seen by `track_children` (also those that left the group):
    SIGTERM, then SIGKILL after the timeout. Never matches processes by name, and never signals a
    group id that may have been reused (see `_group_is_ours`)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.name = name
        # SIGTERM when the starting process dies, even by SIGKILL (for processes started by a Ray actor,
        # which Ray kills with the launcher that owns it: see node_processes.py).
        self.die_with_parent = die_with_parent
        self.command = list(command)
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._leader: psutil.Process | None = None  # pid + create time: told from a later process with its pid
        self._children: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (None while it runs or before it started)."""
        return self.process.poll() if self.process else None

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            with _signals_deferred():
                tie = functools.partial(signal_on_parent_death, signal.SIGTERM, os.getpid()) if self.die_with_parent else None
                self.process = subprocess.Popen(
                    self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
                    cwd=self.cwd, preexec_fn=tie)
                with contextlib.suppress(psutil.Error):  # not reaped yet (a zombie at worst): it is there
                    self._leader = psutil.Process(self.process.pid)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        logger.info("started %s (pid %d): %s", self.name, self.process.pid, " ".join(self.command))
        return self

    def track_children(self) -> None:
        """Remember the current descendants and group members (call now and then: a child that left
        the group and outlived its parent can only be found by the PID remembered here, and a group
        whose leader exited is signalled only while such a remembered member lives in it)."""
        if not self.running():
            return
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self._children.setdefault(child.pid, child)
        except psutil.Error:
            pass
        if self._leader_is_ours():  # checked first: then the members found are of our group
            for member in self._group_members():
                self._children.setdefault(member.pid, member)

    def known_pids(self) -> list[int]:
        """This process and every descendant or group member seen so far."""
        return ([self.process.pid] if self.process else []) + sorted(self._children)

    def alive_pids(self) -> list[int]:
        """Those of `known_pids` still running (same process, not a reused PID)."""
        return ([self.process.pid] if self.running() else []) + [child.pid for child in self._living_children()]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process group and any tracked descendant; returns the exit code (None if never started)."""
        stop_processes([self], timeout)
        return self.process.returncode if self.process else None

    def _living_children(self) -> list[psutil.Process]:
        living = []
        for child in self._children.values():
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    living.append(child)
            except psutil.Error:
                pass
        return living

    def _leader_is_ours(self) -> bool:
        """The process with the leader's pid is the one we started (alive, or a zombie not reaped
        yet): the pid, and so the group id, cannot have been reused. psutil's equality compares pid
        and create time (counted from boot, so a change of the system clock does not affect it)."""
        if self.process is None or self._leader is None:
            return False
        try:
            return psutil.Process(self.process.pid) == self._leader
        except psutil.Error:
            return False

    def _group_is_ours(self) -> bool:
        """The group id still names the group we started: its leader is ours, or a descendant we
        tracked (a psutil.Process: its pid and create time) still lives in the group. A group whose
        leader is gone and holds no process we know may be an unrelated one that got the same id."""
        if self._leader_is_ours():
            return True
        for child in self._living_children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(child.pid) == self.process.pid:
                    return True
        return False

    def _group_members(self) -> list[psutil.Process]:
        """Processes still in this process's group, the leader left out (it is waited for, and so
        reaped, through `self.process` only); none when the group is not provably ours."""
        if self.process is None or not self._group_is_ours():
            return []
        members = []
        for process in psutil.process_iter():
            try:
                if process.pid not in (os.getpid(), self.process.pid) and os.getpgid(process.pid) == self.process.pid:
                    members.append(process)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return members

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the group, if it is still ours (else its id may name an unrelated group now)."""
        if not self._group_is_ours():
            return
        try:
            os.killpg(self.process.pid, sig)  # start_new_session: the group id is the child's pid
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_processes(processes: Iterable[ManagedProcess], timeout: float) -> None:
    """Stop every started process of `processes` within `timeout` seconds in all (then SIGKILL):
    SIGTERM to every process group at once, a wait for the leaders, their group members and their
    tracked descendants against one deadline, then SIGKILL to whatever is left of each."""
    started = [p for p in processes if p.process is not None]
    deadline = time.monotonic() + timeout
    for process in started:
        process.track_children()
        process._signal_group(signal.SIGTERM)  # also when the leader exited: its group may live on
        for child in process._living_children():
            with contextlib.suppress(psutil.Error):
                child.terminate()  # descendants that left the group
    for process in started:
        try:
            process.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s (pid %d) ignored SIGTERM for %.0fs", process.name, process.pid, timeout)
    leftovers = {p.pid: p for process in started for p in (*process._group_members(), *process._living_children())}
    _, alive = psutil.wait_procs(list(leftovers.values()), timeout=max(0.0, deadline - time.monotonic()))
    for process in started:
        process._signal_group(signal.SIGKILL)  # what is left of the group, whether or not its leader exited
    for survivor in alive:
        logger.warning("pid %d outlived SIGTERM; killing it", survivor.pid)
        with contextlib.suppress(psutil.Error):
            survivor.kill()
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.process.wait(timeout=_KILL_WAIT_S)
    psutil.wait_procs(alive, timeout=_KILL_WAIT_S)

