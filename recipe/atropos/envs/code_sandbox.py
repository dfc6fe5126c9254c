"""Run model-written Python against tests in a separate, limited process.

The candidate and its tests run in a fresh `python -I` (isolated mode: no user site, no
PYTHON* variables) in an empty temporary directory, with a wall-clock timeout (the process group
is killed), CPU-time, address-space, file-size and open-file limits, and an environment holding
only PATH. This bounds what a bad completion can cost the environment process; it is not a
security boundary against hostile code (use a container for that).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import signal
import sys
import tempfile

_RUNNER = """
import sys
namespace = {}
exec(compile(sys.argv[1], "<candidate>", "exec"), namespace)
passed = 0
tests = sys.argv[2].splitlines()
for test in tests:
    try:
        exec(test, namespace)
        passed += 1
    except Exception:
        pass
print(f"PASSED {passed}/{len(tests)}")
"""


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


async def run_tests(code: str, tests: list[str], limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """How many of `tests` (one Python statement each, e.g. `assert f(2) == 4`) pass against `code`."""
    with tempfile.TemporaryDirectory(prefix="atropos_code_") as workdir:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", _RUNNER, code, "\n".join(tests),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
            cwd=workdir, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True, preexec_fn=lambda: _limit(limits),
        )
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await process.wait()
            return SandboxResult(0, len(tests), True, None)
    if process.returncode == -signal.SIGXCPU:  # the CPU-time limit stopped it before the wall clock did
        return SandboxResult(0, len(tests), True, process.returncode)
    for line in stdout.decode(errors="replace").splitlines()[::-1]:
        if line.startswith("PASSED "):
            passed, total = line.removeprefix("PASSED ").split("/")
            return SandboxResult(int(passed), int(total), False, process.returncode)
    return SandboxResult(0, len(tests), False, process.returncode)
