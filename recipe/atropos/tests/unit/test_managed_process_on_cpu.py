"""ManagedProcess owns its whole process group: children of a leader that exited gracefully are
stopped too, several processes are stopped against one deadline (not one timeout each, in turn),
a shutdown signal that lands while a child is being started finds the child recorded, and a group
id that may have been reused (its leader exited long ago, no known member left) is never signalled."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from recipe.atropos.launcher.managed_process import ManagedProcess, defer_if_starting, stop_processes

# Ignores SIGTERM, but first writes when it got it (CLOCK_MONOTONIC is system-wide) to argv[1].
STUBBORN = """
import signal, sys, time
def noted(*_):
    open(sys.argv[1], "w").write(repr(time.monotonic()))
signal.signal(signal.SIGTERM, noted)
open(sys.argv[1] + ".ready", "w").close()
time.sleep(600)
"""
# Leaves a stubborn child in its own group, records the child's pid, and dies on SIGTERM.
GRACEFUL_LEADER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]])
open(sys.argv[1] + ".pid", "w").write(str(child.pid))
time.sleep(600)
"""


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_children_of_a_leader_that_exits_gracefully_are_stopped(tmp_path):
    note = str(tmp_path / "child")
    leader = ManagedProcess("leader", [sys.executable, "-c", GRACEFUL_LEADER, note, STUBBORN]).start()
    wait_for(note + ".pid")
    wait_for(note + ".ready")
    child = psutil.Process(int(open(note + ".pid").read()))
    assert leader.stop(timeout=2.0) == -signal.SIGTERM  # the leader went on SIGTERM...
    assert os.path.exists(note)  # ...its child got SIGTERM too, and ignored it
    child.wait(timeout=10)  # ...and was killed with the rest of the group: wait returns, no TimeoutExpired
    assert not child.is_running()


def test_several_processes_are_stopped_against_one_deadline(tmp_path):
    notes = [str(tmp_path / f"stubborn{i}") for i in range(3)]
    processes = [ManagedProcess(f"stubborn{i}", [sys.executable, "-c", STUBBORN, note]).start()
                 for i, note in enumerate(notes)]
    for note in notes:
        wait_for(note + ".ready")
    timeout = 3.0
    started = time.monotonic()
    stop_processes(processes, timeout)
    # Every process had its SIGTERM before the deadline, when the first SIGKILL can come: none
    # waited for another's timeout. (One after another, the second would get it `timeout` late.)
    termed = [float(open(note).read()) for note in notes]
    assert max(termed) < started + timeout, [t - started for t in termed]
    assert all(not p.running() for p in processes)


def test_a_signal_while_a_child_starts_is_acted_on_once_the_child_is_recorded(tmp_path, monkeypatch):
    class Shutdown(Exception):
        pass

    def handler(signum, _frame):
        if not defer_if_starting(signum):
            raise Shutdown

    real_popen = subprocess.Popen

    def popen_then_signal(*args, **kwargs):
        child = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR1)  # lands right after the child exists
        return child

    previous = signal.signal(signal.SIGUSR1, handler)
    managed = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        monkeypatch.setattr(subprocess, "Popen", popen_then_signal)
        with pytest.raises(Shutdown):
            managed.start()
            time.sleep(5)  # the redelivered signal is handled here at the latest
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert managed.process is not None and managed.running()
    managed.stop(timeout=5.0)
    assert not managed.running()


def test_stopping_a_process_that_exited_long_ago_spares_the_unrelated_group_that_got_its_id(monkeypatch):
    """PID reuse, simulated: the leader exited and was reaped, its group emptied, and the kernel gave
    its pid to an unrelated process that leads a session (so a group) of its own. Stopping the
    ManagedProcess must signal neither that group nor that process."""
    managed = ManagedProcess("exited", [sys.executable, "-c", "pass"]).start()
    assert managed.process.wait(timeout=60) == 0  # exited and reaped: its pid is free for reuse
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        assert os.getpgid(stranger.pid) == stranger.pid
        monkeypatch.setattr(managed.process, "pid", stranger.pid)  # the recorded pid (and group id) now names it
        assert managed.stop(timeout=2.0) == 0
        with pytest.raises(subprocess.TimeoutExpired):  # still running a second later: stop sent it nothing
            stranger.wait(timeout=1.0)
    finally:
        stranger.kill()
        stranger.wait(timeout=30)


# Starts a stubborn child, waits for the test to track it, then starts a second one (never tracked).
LATE_CHILD_LEADER = """
import os, subprocess, sys, time
def started(name):
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1] + name])
    open(sys.argv[1] + name + ".tmp", "w").write(str(child.pid))
    os.replace(sys.argv[1] + name + ".tmp", sys.argv[1] + name + ".pid")
started(".first")
while not os.path.exists(sys.argv[1] + ".tracked"):
    time.sleep(0.05)
started(".late")
time.sleep(600)
"""


def test_a_group_whose_leader_exited_long_ago_is_stopped_while_a_tracked_member_lives(tmp_path):
    """The leader died (and was reaped) long before the stop; its children live on in the group, one
    tracked, one started after the last tracking. The tracked one shows the group is still ours, so
    the whole group is stopped: the untracked child gets SIGTERM and SIGKILL too."""
    note = str(tmp_path / "group")
    leader = ManagedProcess("leader", [sys.executable, "-c", LATE_CHILD_LEADER, note, STUBBORN]).start()
    children = []
    try:
        wait_for(note + ".first.pid")
        children.append(psutil.Process(int(open(note + ".first.pid").read())))
        wait_for(note + ".first.ready")
        leader.track_children()
        open(note + ".tracked", "w").close()
        wait_for(note + ".late.pid")
        children.append(psutil.Process(int(open(note + ".late.pid").read())))
        wait_for(note + ".late.ready")
        os.kill(leader.pid, signal.SIGTERM)  # the leader alone
        assert leader.process.wait(timeout=30) == -signal.SIGTERM
        late = children[1]
        assert os.getpgid(late.pid) == leader.pid  # the group lives on without its leader
        leader.stop(timeout=2.0)
        assert os.path.exists(note + ".late")  # the untracked child got the group's SIGTERM (and ignored it)...
        late.wait(timeout=10)  # ...and the group's SIGKILL: wait returns, no TimeoutExpired
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
