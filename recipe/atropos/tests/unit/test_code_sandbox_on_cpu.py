"""The code environment's sandbox holds against a hostile candidate: no network, nothing left running
after scoring, no project code or expected results, no privileges; and it refuses to run at all
where it cannot isolate. Real processes and namespaces, no mocks."""

import asyncio
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from recipe.atropos.envs.code import tasks
from recipe.atropos.envs.code.code_env import score_code
from recipe.atropos.envs.code.sandbox import (Isolation, SandboxLimits, SandboxUnavailableError, check_sandbox,
                                              run_function)

TASKS_FILE = Path(tasks.__file__).resolve()
# A directory the candidate sees as the host does (not one of the sandbox's private scratch
# directories, nor pytest's tmp_path under /tmp).
VISIBLE_PARENT = "/run" if os.path.isdir("/run") else "/"
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # the world-writable directories every host has
PROJECT_ROOT = TASKS_FILE.parents[4]  # holds the `recipe` package


def supported(mode):
    try:
        check_sandbox(Isolation(mode=mode))
    except SandboxUnavailableError as exc:
        pytest.skip(f"{mode} mode cannot isolate here: {exc}")
    return Isolation(mode=mode)


@pytest.fixture(params=["root", "user"])
def isolation(request):
    """Each isolation mode this machine supports (root mode needs root; user mode, user namespaces)."""
    return supported(request.param)


def run(code, function, inputs, expected, isolation=Isolation(), **limits):
    return asyncio.run(run_function(code, function, inputs, expected, SandboxLimits(**limits), isolation))


CONNECT = """
import socket
def connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.sendall(b"forged scored data")
        return True
    except OSError:
        return False
"""


def test_candidate_cannot_reach_a_loopback_service(isolation):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        result = run(CONNECT, "connect", [[listener.getsockname()[1]]], [False], isolation)
        # A loopback connect completes its handshake in the kernel before connect() returns, so a
        # connection the candidate made is already queued here: nothing queued means nothing arrived.
        arrived, _, _ = select.select([listener], [], [], 0)
        assert arrived == [], "the candidate connected to a loopback listener"
    assert result.passed == 1  # its connect failed


SCRATCH = """
import os, socket
def scratch(marker, socket_path):
    written = []
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        with open(os.path.join(directory, marker), "w") as file:
            file.write("left behind")
        written.append(directory)
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(socket_path)
            conn.sendall(b"forged scored data")
        written.append("socket")
    except OSError:
        pass
    return written
"""


def test_what_the_candidate_writes_in_scratch_directories_is_gone_and_their_sockets_are_out_of_reach(isolation):
    """/tmp, /var/tmp and /dev/shm are the candidate's own: it writes there (the function returns),
    nothing of it is on the host afterwards, and a Unix socket anyone could connect to in /tmp (as
    Ray keeps its sockets in /tmp/ray) is not there for it."""
    marker = f"scratch-{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as directory, socket.socket(socket.AF_UNIX) as listener:
        Path(directory).chmod(0o777)
        socket_path = str(Path(directory) / "service.sock")
        listener.bind(socket_path)
        os.chmod(socket_path, 0o777)
        listener.listen()
        try:
            result = run(SCRATCH, "scratch", [[marker, socket_path]], [list(SCRATCH_DIRS)], isolation)
            arrived, _, _ = select.select([listener], [], [], 0)
            assert arrived == [], "the candidate connected to a Unix socket in /tmp"
            assert result.passed == 1, result  # it wrote to all three, and its connect failed
            assert [d for d in SCRATCH_DIRS if (Path(d) / marker).exists()] == []
        finally:
            for d in SCRATCH_DIRS:  # what an unsound sandbox left behind
                (Path(d) / marker).unlink(missing_ok=True)


# Forks a child into a new session, which forks again and execs a long sleep carrying `marker` in
# its argv; the candidate goes on only once that process is running (it wrote to the pipe).
ESCAPE = """
import os, sys, time
def escape(marker, then_hang):
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            code = f"import os, time; os.write({write_end}, b'up'); time.sleep(1000)"
            os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code, marker])
        os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 2) == b"up"
    if then_hang:
        time.sleep(1000)
    return True
"""


def processes_with(marker):
    return [process for process in psutil.process_iter(["cmdline"]) if marker in (process.info["cmdline"] or [])]


@pytest.mark.parametrize("then_hang", [False, True], ids=["returns", "timed_out"])
def test_nothing_the_candidate_started_outlives_scoring(isolation, then_hang):
    marker = f"escaped-{uuid.uuid4().hex}"
    try:
        result = run(ESCAPE, "escape", [[marker, then_hang]], [True], isolation, timeout_s=3.0)
        assert result.timed_out == then_hang
        assert result.passed == (0 if then_hang else 1)  # the escape really ran before scoring ended
        assert processes_with(marker) == []
    finally:
        for process in processes_with(marker):  # what an unsound sandbox left behind
            process.kill()


SCORER = """
import asyncio, sys
from recipe.atropos.envs.code.sandbox import SandboxLimits, run_function
code, marker = sys.argv[1:]
asyncio.run(run_function(code, "escape", [[marker, True]], [True], SandboxLimits(timeout_s=120)))
"""
ESCAPE_STARTED_S = 60.0


def test_nothing_the_candidate_started_outlives_a_scorer_that_dies():
    marker = f"escaped-{uuid.uuid4().hex}"
    scorer = subprocess.Popen([sys.executable, "-c", SCORER, ESCAPE, marker])
    try:
        deadline = time.monotonic() + ESCAPE_STARTED_S
        while not (escaped := [process for process in processes_with(marker) if process.pid != scorer.pid]):
            assert scorer.poll() is None and time.monotonic() < deadline, "the candidate never started its escape"
            time.sleep(0.2)
        scorer.kill()
        scorer.wait()
        _, alive = psutil.wait_procs(escaped, timeout=30)
        assert alive == []
    finally:
        scorer.kill()
        scorer.wait()
        for process in processes_with(marker):  # an unsound sandbox's leftovers
            process.kill()


TABLE_LOOKUP = """
def add(a, b):
    from recipe.atropos.envs.code.tasks import TASKS_BY_NAME
    return next(want for args, want in TASKS_BY_NAME["add"].cases if list(args) == [a, b])
"""


def test_a_candidate_cannot_look_up_the_expected_results():
    assert asyncio.run(score_code(f"```python\n{TABLE_LOOKUP}\n```", "add")) == 0.0
    assert asyncio.run(score_code("```python\ndef add(a, b):\n    return a + b\n```", "add")) == 1.0


def test_the_project_files_cannot_be_read_or_written(isolation):
    reads = "def read(path):\n    with open(path) as file:\n        return file.read()"
    assert run(reads, "read", [[str(TASKS_FILE)]], [TASKS_FILE.read_text()], isolation).passed == 0
    planted = PROJECT_ROOT / f"planted-{uuid.uuid4().hex}"
    writes = "def write(path):\n    with open(path, 'w') as file:\n        file.write('x')\n    return True"
    try:
        assert run(writes, "write", [[str(planted)]], [True], isolation).passed == 0
        assert not planted.exists()
    finally:
        planted.unlink(missing_ok=True)


CAPABILITIES = """
def capabilities():
    status = open("/proc/self/status").read().splitlines()
    return [line.split()[1] for line in status if line.startswith(("CapEff", "CapBnd"))]
"""


def test_the_candidate_has_no_capabilities(isolation):
    assert run(CAPABILITIES, "capabilities", [[]], [["0" * 16, "0" * 16]], isolation).passed == 1


APPEND = """
def append(path):
    try:
        with open(path, "a") as file:
            file.write(" and changed")
    except OSError:
        pass
    with open(path) as file:
        return file.read()
"""


def test_run_by_root_the_candidate_cannot_change_roots_files():
    isolation = supported("root")
    with tempfile.TemporaryDirectory(dir=VISIBLE_PARENT) as directory:  # readable by anyone
        Path(directory).chmod(0o755)
        ours = Path(directory) / "ours"
        ours.write_text("unchanged")
        assert run(APPEND, "append", [[str(ours)]], ["unchanged"], isolation).passed == 1  # read it, wrote nothing
        assert ours.read_text() == "unchanged"


@pytest.mark.parametrize("unshare", ["/nonexistent/unshare", "/bin/false"])
def test_no_candidate_runs_where_the_sandbox_cannot_isolate(tmp_path, unshare):
    tmp_path.chmod(0o777)
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'w').close()\ndef add(a, b): return a + b"
    with pytest.raises(SandboxUnavailableError, match=unshare) as error:
        run(code, "add", [[1, 2]], [3], Isolation(unshare=unshare))
    assert "user namespaces" in str(error.value)
    assert not ran.exists()
