"""Run model-written Python in a separate, limited process, and judge it outside that process.

The candidate runs in a fresh `python -I` (isolated mode: no user site, no PYTHON* variables) in an
empty temporary directory, with a wall-clock timeout (the process group is killed), CPU-time,
address-space, file-size and open-file limits, and an environment holding only PATH. That process
gets the candidate's code, the function's name and the test inputs on stdin, and writes back one
JSON line: what the function returned (or the name of what it raised) for each input. The parent
compares those values with the expected ones, which never leave it: a candidate that prints a fake
verdict, exits early, rebinds builtins or returns objects that compare equal to anything cannot
make itself pass (its outputs are plain JSON values when they reach the parent, and anything other
than exactly one well-formed answer scores as a failure). This bounds what a bad completion can
cost and what it can forge; it is not a security boundary against hostile code (the candidate can
read the file system, for one: use a container for that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

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


def _limit(limits: SandboxLimits) -> None:
    cpu = max(1, int(limits.timeout_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))


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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def run_function(code: str, function: str, inputs: Sequence[Sequence[Any]], expected: Sequence[Any],
                       limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Call `function` defined by `code` on each of `inputs` in the limited process; count the calls
    whose result equals the matching `expected` value (compared here, never in that process)."""
    request = json.dumps({"code": code, "function": function, "inputs": [list(args) for args in inputs]}).encode()
    with tempfile.TemporaryDirectory(prefix="atropos_code_") as workdir:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", _RUNNER,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            cwd=workdir, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True, preexec_fn=lambda: _limit(limits),
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
                _kill_group(process.pid)
            await process.wait()
            return answer

        try:
            answer = await asyncio.wait_for(exchange(), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            _kill_group(process.pid)
            await process.wait()
            return SandboxResult(0, len(expected), True, None)
        _kill_group(process.pid)  # anything the candidate left running in its group
    if process.returncode == -signal.SIGXCPU:  # the CPU-time limit stopped it before the wall clock did
        return SandboxResult(0, len(expected), True, process.returncode)
    passed = _passed(answer, expected) if answer is not None else 0
    return SandboxResult(passed, len(expected), False, process.returncode)
