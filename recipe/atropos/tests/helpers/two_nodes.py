"""Two Ray nodes on one machine, each with its own network stack: node A is the root network
namespace, node B a network namespace of the test's own joined to A by a veth pair, with addresses
the test chose (a /24 nothing else on the host uses). Ray's head runs on A, a Ray worker on B, both
with the run's token. Everything is made and removed by the context manager, also when the test
fails: the Ray processes stopped by PID, whatever still runs in B's namespace killed, the veth pair
and the namespace deleted. Needs root and iproute2's `ip`."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from recipe.atropos.auth.ray_auth import RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_PATH_ENV
from recipe.atropos.auth.run_token import TOKEN_FILE_ENV
from recipe.atropos.launcher.api_process import free_loopback_port
from recipe.atropos.launcher.managed_process import ManagedProcess
from recipe.atropos.tests.helpers.ray_helpers import env_without_tokens

SUBNET = "10.213.7"  # RFC 1918; the test's own
NODE_A, NODE_B = f"{SUBNET}.1", f"{SUBNET}.2"
RAY = str(Path(sys.executable).with_name("ray"))
NODE_UP_S = 120.0


def cannot_make_namespaces() -> str | None:
    """Why this machine cannot host the two nodes, or None."""
    if os.geteuid() != 0:
        return "making a network namespace and a veth pair needs root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if subprocess.run(["ip", "link", "show", f"atrva{os.getpid()}"], capture_output=True).returncode == 0:
        return "a veth of this process's name already exists"
    return None


@dataclasses.dataclass
class TwoNodes:
    namespace: str
    gcs: str  # address:port of the head on node A
    head: ManagedProcess
    worker: ManagedProcess
    left_running: list[int] = dataclasses.field(default_factory=list)  # after the Ray nodes were stopped

    def exists(self) -> bool:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        return any(line.split()[0] == self.namespace for line in listed.stdout.splitlines() if line.strip())

    def namespace_pids(self) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True)
        return [int(pid) for pid in listed.stdout.split()]

    def stop_ray(self) -> None:
        for node in (self.worker, self.head):  # `ray start --block` takes a while over SIGTERM
            node.track_children()
            node.stop(timeout=5)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)


def _wait_started(node: ManagedProcess) -> None:
    deadline = time.monotonic() + NODE_UP_S
    while "Ray runtime started" not in node.log_path.read_text(errors="replace"):
        tail = node.log_path.read_text(errors="replace")[-2000:]
        if not node.running():
            raise RuntimeError(f"{node.name} exited:\n{tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{node.name}: no 'Ray runtime started' within {NODE_UP_S:.0f}s:\n{tail}")
        time.sleep(0.5)


@contextlib.contextmanager
def two_nodes(log_dir: Path, token_file: Path, worker_cpus: int = 16, worker_gpus: int = 1) -> Iterator[TwoNodes]:
    """Node A (this namespace: the Ray head, no CPUs or GPUs for work) and node B (a new namespace: a
    Ray worker with `worker_cpus` CPUs and `worker_gpus` GPU slots, the CPU platform's stand-in for
    workers), both admitting only the token in `token_file` (mode 0600, as docs/multinode.md says)."""
    namespace, veth_a, veth_b = f"atrnodeb{os.getpid()}", f"atrva{os.getpid()}", f"atrvb{os.getpid()}"
    temp_dir = Path(tempfile.mkdtemp(prefix="ray2n"))  # short: Ray's socket paths must fit in 107 bytes
    # As docs/multinode.md starts every node: Ray's token and the run's, from the same 0600 file (the
    # trainer's task runner, started by a raylet, finds the run's token in the raylet's environment).
    env = {**env_without_tokens(), RAY_AUTH_MODE_ENV: "token", RAY_AUTH_TOKEN_PATH_ENV: str(token_file),
           TOKEN_FILE_ENV: str(token_file)}
    port = free_loopback_port()
    head = ManagedProcess("ray-head-A", [RAY, "start", "--head", "--block", f"--node-ip-address={NODE_A}",
                                         f"--port={port}", "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false",
                                         "--disable-usage-stats", f"--temp-dir={temp_dir / 'a'}"],
                          log_path=log_dir / "ray-head-A.log", env=env)
    worker = ManagedProcess("ray-worker-B", ["ip", "netns", "exec", namespace, RAY, "start", "--block",
                                             f"--address={NODE_A}:{port}", f"--node-ip-address={NODE_B}",
                                             f"--num-cpus={worker_cpus}", f"--num-gpus={worker_gpus}",
                                             "--disable-usage-stats", f"--temp-dir={temp_dir / 'b'}"],
                            log_path=log_dir / "ray-worker-B.log", env=env)
    nodes = TwoNodes(namespace, f"{NODE_A}:{port}", head, worker)
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _run("ip", "link", "set", veth_b, "netns", namespace)
        _run("ip", "addr", "add", f"{NODE_A}/24", "dev", veth_a)
        _run("ip", "link", "set", veth_a, "up")
        _run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{NODE_B}/24", "dev", veth_b)
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", veth_b, "up")
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        head.start()
        _wait_started(head)
        worker.start()
        _wait_started(worker)
        yield nodes
    finally:
        nodes.stop_ray()
        nodes.left_running = nodes.namespace_pids() + head.alive_pids() + worker.alive_pids()
        for pid in nodes.namespace_pids():  # what outlived the worker's process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "link", "del", veth_a], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
