"""Run model-written Python in an isolated, limited process, and judge it outside that process.

What a candidate gets: the code runs in a fresh `python -I -S` (isolated mode, no site: no
PYTHON* variables, no site-packages, so no editable-install finder or .pth can put this project
on sys.path) of the base interpreter (not the venv's, which lives in the project), with CPU-time,
address-space, file-size and open-file limits, a wall-clock timeout, an environment holding only
PATH (and the interpreter's library path), and an empty working directory. It gets its code, the
function's name and the test inputs on stdin and writes back one JSON line: what the function
returned (or the name of what it raised) for each input. The parent compares those values with the
expected ones, which never leave it: a candidate that prints a fake verdict, exits early, rebinds
builtins or returns objects that compare equal to anything cannot make itself pass (its outputs are
plain JSON values when they reach the parent, and anything other than exactly one well-formed
answer scores as a failure).

What the sandbox guarantees, through Linux namespaces made by util-linux's `unshare` (Python 3.11
has no os.unshare) and a privilege drop by `setpriv`:
- No network: a new network namespace holds only a loopback that is down, so nothing listening on
  this machine (the trajectory API on 127.0.0.1) can be reached, over TCP, UDP or abstract sockets.
- Nothing survives scoring: the runner is a child of the init (PID 1) of a new PID namespace, and
  that init exits as soon as the runner does, or is killed at the timeout, or when the scoring
  process dies; when a namespace's init dies the kernel kills every process in it, and only then
  lets it be reaped. A process cannot leave its PID namespace, whereas a session or process group is
  left with one setsid() or double fork; RLIMIT_NPROC does not bind root, and cgroups would need a
  delegated hierarchy. A fresh /proc shows the candidate only its own processes; System V IPC is
  its own too.
- No project code or expected results: besides running without site-packages, the project root
  (the directory holding the `recipe` package), the venv and the base interpreter's site-packages
  are covered by empty read-only file systems in a private mount namespace, so tasks.py can be
  neither imported nor read, nor the project written.
- No privileges: run as real root ("root" mode), the candidate runs as nobody (uid/gid 65534, no
  supplementary groups); in either mode it has no capabilities (empty bounding set) and
  no_new_privs, so no setuid program gives any back. Without root ("user" mode, an unprivileged user
  namespace), uid 0 inside maps to the invoking user: the candidate keeps that user's file
  permissions everywhere outside the masked paths, and can connect to that user's Unix sockets in
  the file system.
- Nothing written outlives scoring: /tmp, /var/tmp and /dev/shm are fresh tmpfs mounts private to
  the namespace (64 MiB each), gone with it; the Unix sockets other programs keep there (Ray's in
  /tmp/ray) are out of sight.

What a candidate can still do: read whatever nobody (or, in user mode, the invoking user) can read
outside the masked paths, including the base interpreter's prefix (its stdlib), which is bound
read-only into the sandbox so that it runs even where its real path is closed to nobody; write to
other world-writable directories (in user mode: whatever the invoking user may write), where files
outlive scoring; connect to Unix sockets it may write to outside the scratch directories. Where the
namespaces cannot be made (no root and no unprivileged user namespaces, or a container that forbids
them) nothing runs: `SandboxUnavailableError` says what failed, and candidates are never run
without isolation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import psutil

from recipe.atropos.parent_death import signal_on_parent_death

# The candidate's process. Its stdout is the answer channel; everything the candidate prints goes
# to /dev/null. Whatever the candidate does here, the verdict is the parent's.
_RUNNER = r"""
import json, os, sys
request = json.loads(sys.stdin.read())
channel = os.dup(1)
sink = os.open(os.devnull, os.O_WRONLY)
os.dup2(sink, 1)
os.dup2(sink, 2)
dumps, write, exit_now = json.dumps, os.write, os._exit

def answer(outputs):
    data = (dumps({"outputs": outputs}) + "\n").encode()
    while data:
        data = data[write(channel, data):]
    exit_now(0)

try:
    namespace = {"__name__": "candidate"}
    exec(compile(request["code"], "<candidate>", "exec"), namespace)
    function = namespace[request["function"]]
except BaseException:
    answer(None)
outputs = []
for args in request["inputs"]:
    try:
        outputs.append({"value": json.loads(dumps(function(*args)))})
    except BaseException as exc:
        outputs.append({"raised": type(exc).__name__})
answer(outputs)
"""
_ANSWER_LIMIT = 1024**2  # bytes: an answer longer than this is a failure (and stops being read)


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0
    memory_bytes: int = 512 * 1024**2
    file_size_bytes: int = 1024**2
    open_files: int = 64


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    passed: int
    total: int
    timed_out: bool  # stopped by the wall-clock timeout or the CPU-time limit
    returncode: int | None


def _prepare_child(limits: SandboxLimits, parent: int) -> None:
    """In the forked unshare process, before exec: the limits, and SIGKILL when the scoring process
    dies (its --kill-child then takes the namespace with it), so a dead scorer leaves nothing behind."""
    _limit(limits)
    signal_on_parent_death(signal.SIGKILL, parent)


def _limit(limits: SandboxLimits) -> None:
    cpu = max(1, int(limits.timeout_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))


_NOBODY = 65534  # uid and gid the candidate runs as in root mode
_PROJECT_ROOT = Path(__file__).resolve().parents[4]  # the directory holding the `recipe` package
# An empty read-only file system over a path (one under a scratch directory is gone already).
_MASK = "if [ -e {0} ]; then mount -t tmpfs -o ro,nosuid,nodev,mode=0555 sandbox-mask {0}; fi"
# The world-writable scratch directories get a fresh tmpfs each, private to the namespace and gone with
# it: what the candidate writes there cannot outlive scoring, and the sockets other programs keep
# there (Ray's session directory in /tmp/ray among them) cannot be reached.
_SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_SCRATCH = "if [ -d {0} ]; then mount -t tmpfs -o nosuid,nodev,size=64m,mode=1777 sandbox-scratch {0}; fi"


class SandboxUnavailableError(RuntimeError):
    """Candidates cannot be isolated here as asked; none was run."""


@dataclasses.dataclass(frozen=True)
class Isolation:
    """How candidates are cut off. `mode`: "root" (run as real root: namespaces, then nobody),
    "user" (an unprivileged user namespace: the invoking user without capabilities) or "auto" (root
    when this process runs as root, else user). `unshare`, `setpriv`: util-linux's programs."""

    mode: Literal["auto", "root", "user"] = "auto"
    unshare: str = "unshare"
    setpriv: str = "setpriv"

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "root", "user"):
            raise ValueError(f"Isolation.mode must be 'auto', 'root' or 'user', not {self.mode!r}")

    def resolved_mode(self) -> str:
        if self.mode == "auto":
            return "root" if os.geteuid() == 0 else "user"
        return self.mode


@dataclasses.dataclass(frozen=True)
class _Interpreter:
    """The base interpreter; in the sandbox its prefix is bound read-only at <workdir>/python, so the
    other paths are relative to the prefix."""

    prefix: Path
    executable: Path
    library_dir: Path | None  # libpython's directory where it is linked by absolute path
    site_packages: tuple[Path, ...]


@functools.cache
def _base_interpreter() -> _Interpreter:
    prefix = Path(sys.base_prefix).resolve()
    executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    if Path(sys.base_exec_prefix).resolve() != prefix or not executable.is_relative_to(prefix):
        raise SandboxUnavailableError(
            f"the base interpreter {executable} (prefix {sys.base_prefix}, exec prefix {sys.base_exec_prefix}) is not "
            "one directory tree that can be bound into the code sandbox; run the environment with a standard CPython "
            "installation (one prefix holding bin/ and lib/)")
    library_dir = sysconfig.get_config_var("LIBDIR")
    library_dir = (Path(library_dir).resolve() if library_dir and sysconfig.get_config_var("Py_ENABLE_SHARED")
                   else None)
    site_packages = {Path(sysconfig.get_path(name, vars={"base": prefix, "platbase": prefix}))
                     for name in ("purelib", "platlib")}
    return _Interpreter(
        prefix, executable.relative_to(prefix),
        library_dir.relative_to(prefix) if library_dir and library_dir.is_relative_to(prefix) else None,
        tuple(sorted(path.relative_to(prefix) for path in site_packages
                     if path.is_relative_to(prefix) and path.is_dir())))


def _hidden_paths() -> list[Path]:
    """What the candidate must not read: the project and the venv its editable install lives in."""
    venv = Path(sys.prefix).resolve()
    return [_PROJECT_ROOT] + ([venv] if venv != Path(sys.base_prefix).resolve() else [])


def _init_script(workdir: Path, interpreter: _Interpreter, mode: str) -> str:
    """The namespace's PID 1, run as root of the new namespaces: private scratch directories, the
    workdir (again) in them, bind the interpreter, mask what the candidate must not read, then run the
    privilege drop and runner ("$@") as its child, and exit with its status. The runner is not PID 1
    itself: PID 1 ignores signals it has no handler for, the CPU-time limit's SIGXCPU among them."""
    bound = workdir / "python"
    masks = [bound / path for path in interpreter.site_packages]
    for hidden in _hidden_paths():
        if workdir.is_relative_to(hidden):
            raise SandboxUnavailableError(
                f"the code sandbox's temporary directory {workdir} is inside {hidden}, which the sandbox hides; "
                "set TMPDIR to a directory outside it")
        if hidden.is_relative_to(interpreter.prefix):
            masks.append(bound / hidden.relative_to(interpreter.prefix))
        masks.append(hidden)
    outermost = [path for path in dict.fromkeys(masks)  # a path inside another mask is hidden already
                 if not any(path != other and path.is_relative_to(other) for other in masks)]
    q = shlex.quote
    work = q(str(workdir / "work"))
    # The workdir is usually in /tmp, under a fresh tmpfs now: make its two directories again there.
    make_workdir = [f"mkdir -p {q(str(bound))} {work}", f"chmod 0711 {q(str(workdir))}", f"chmod 0700 {work}",
                    *([f"chown {_NOBODY}:{_NOBODY} {work}"] if mode == "root" else [])]
    return "\n".join(["set -e", *(_SCRATCH.format(q(path)) for path in _SCRATCH_DIRS), *make_workdir,
                      f"mount --bind -o ro {q(str(interpreter.prefix))} {q(str(bound))}",
                      *(_MASK.format(q(str(path))) for path in outermost), f"cd {work}", '"$@"', "exit $?"])


def _command(isolation: Isolation, mode: str, workdir: Path, python_args: Sequence[str]) -> list[str]:
    """unshare (new network, PID, IPC and mount namespaces; a user namespace in user mode) runs the
    init script, which runs setpriv (privileges dropped), which execs the base interpreter."""
    interpreter = _base_interpreter()
    namespaces = ["--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount", "--mount-proc"]
    drop = ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    if mode == "root":
        drop = ["--reuid", str(_NOBODY), "--regid", str(_NOBODY), "--clear-groups", *drop]
    else:
        namespaces = ["--user", "--map-root-user", *namespaces]
    bound = workdir / "python"
    library = ([] if interpreter.library_dir is None
               else ["env", f"LD_LIBRARY_PATH={bound / interpreter.library_dir}"])
    return [isolation.unshare, *namespaces, "sh", "-c", _init_script(workdir, interpreter, mode), "sandbox-init",
            isolation.setpriv, *drop, "--", *library, str(bound / interpreter.executable), "-I", "-S",
            *python_args]


def _environment() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@contextlib.contextmanager
def _workdir(mode: str) -> Iterator[Path]:
    """A temporary directory holding `work` (the candidate's, writable by it) and `python` (where the
    interpreter is bound); removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="atropos_code_") as name:
        top = Path(name).resolve()
        top.chmod(0o711)
        (top / "python").mkdir()
        (top / "work").mkdir(mode=0o700)
        if mode == "root":
            os.chown(top / "work", _NOBODY, _NOBODY)
        yield top


@functools.cache
def _probe_failure(isolation: Isolation, mode: str) -> str | None:
    """Why candidates cannot be isolated here, or None: starts an interpreter in the sandbox once."""
    what = (f"the code sandbox ({mode} mode: {isolation.unshare} with new network, PID and mount namespaces, then "
            f"{isolation.setpriv})")
    advice = ("Run the environment as root, or as a user allowed to create user namespaces (unprivileged user "
              "namespaces enabled: sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1 "
              "where it exists, and no container seccomp or AppArmor rule forbidding them); util-linux provides "
              "unshare and setpriv. Candidates are never run without the sandbox.")
    try:
        with _workdir(mode) as workdir:
            done = subprocess.run(_command(isolation, mode, workdir, ["-c", "pass"]), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_environment(), timeout=60)
    except SandboxUnavailableError as exc:
        return f"{what} cannot start: {exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} cannot start: {exc}. {advice}"
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[-2000:]
        return f"{what} failed (exit status {done.returncode}): {stderr or 'no message'}. {advice}"
    return None


def check_sandbox(isolation: Isolation = Isolation()) -> str:
    """The mode candidates run in under `isolation` ("root" or "user"). Raises SandboxUnavailableError,
    saying what failed and what to do, where this machine cannot isolate them. Probes once per
    isolation and mode, by starting an interpreter in the sandbox."""
    mode = isolation.resolved_mode()
    failure = _probe_failure(isolation, mode)
    if failure is not None:
        raise SandboxUnavailableError(failure)
    return mode


def same_value(actual: Any, expected: Any) -> bool:
    """JSON values equal as a test would mean it: bools only equal bools, numbers equal numbers
    (5 == 5.0), lists and objects element by element."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and actual == expected
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(same_value, actual, expected))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(same_value(actual[key], expected[key]) for key in expected))
    return type(actual) is type(expected) and actual == expected


def _passed(answer: bytes, expected: Sequence[Any]) -> int:
    """How many outputs of the candidate's one answer line equal the expected values (0 unless the
    answer is exactly one JSON object with one output per case)."""
    lines = answer.splitlines()
    if len(lines) != 1:
        return 0
    try:
        outputs = json.loads(lines[0]).get("outputs")
    except (ValueError, AttributeError):
        return 0
    if not isinstance(outputs, list) or len(outputs) != len(expected):
        return 0
    return sum(isinstance(out, dict) and set(out) == {"value"} and same_value(out["value"], want)
               for out, want in zip(outputs, expected))


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes | None:
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the namespace's init (unshare's one child) and wait for unshare to exit: the kernel kills
    everything in the namespace before unshare can reap that init, so then nothing the candidate
    started is left. Before the init exists, kill the unshare process's group instead."""
    try:
        inits = psutil.Process(process.pid).children()
    except psutil.NoSuchProcess:
        inits = []
    for init in inits:
        with contextlib.suppress(psutil.NoSuchProcess):
            init.kill()
    if not inits:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    while await process.stdout.read(65536):  # asyncio's wait() also waits for the pipes to reach EOF
        pass
    await process.wait()


def _runner_status(returncode: int) -> int:
    """The runner's exit status as the init shell reports it (128 + N: killed by signal N) in
    subprocess's terms (-N)."""
    return 128 - returncode if 128 < returncode <= 128 + signal.SIGRTMAX else returncode


async def run_function(code: str, function: str, inputs: Sequence[Sequence[Any]], expected: Sequence[Any],
                       limits: SandboxLimits = SandboxLimits(), isolation: Isolation = Isolation()) -> SandboxResult:
    """Call `function` defined by `code` on each of `inputs` in the sandbox; count the calls whose
    result equals the matching `expected` value (compared here, never in the sandbox). Raises
    SandboxUnavailableError, before running anything, where `isolation` cannot be had."""
    mode = check_sandbox(isolation)
    request = json.dumps({"code": code, "function": function, "inputs": [list(args) for args in inputs]}).encode()
    with _workdir(mode) as workdir:
        process = await asyncio.create_subprocess_exec(
            *_command(isolation, mode, workdir, ["-c", _RUNNER]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env=_environment(), start_new_session=True,
            preexec_fn=functools.partial(_prepare_child, limits, os.getpid()),
        )

        async def exchange() -> bytes | None:
            try:
                process.stdin.write(request)
                await process.stdin.drain()
                process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = await _read_capped(process.stdout, _ANSWER_LIMIT)
            if answer is None:
                await _stop(process)
            await process.wait()
            return answer

        try:
            answer = await asyncio.wait_for(exchange(), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            await _stop(process)
            return SandboxResult(0, len(expected), True, None)
    returncode = _runner_status(process.returncode)
    if returncode == -signal.SIGXCPU:  # the CPU-time limit stopped it before the wall clock did
        return SandboxResult(0, len(expected), True, returncode)
    passed = _passed(answer, expected) if answer is not None else 0
    return SandboxResult(passed, len(expected), False, returncode)
