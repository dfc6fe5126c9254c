"""Environment processes on other nodes of the run's Ray cluster.

An environment with `node: <address>` in the launcher's YAML runs on the Ray node with that address
(as `ray status` and `ray list nodes` show it). The launcher joins the cluster (`ray_init` in its
YAML) and starts, pinned to that node with a hard node affinity and no CPU asked, a small actor that
owns the process there as a `ManagedProcess`: it is stopped by PID (its process group and every
descendant seen), and it gets SIGTERM when the actor dies. Ray kills the actors of a driver that
exits, so a launcher killed outright leaves no environment behind on any node.

The command, the working directory and the log path are the launcher's: every node needs the same
paths (the project, its virtual environment, the run directory), as on a cluster with a shared file
system. Without one, the log is on that node at the path the launcher prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from recipe.atropos.launcher.managed_process import ManagedProcess

CALL_TIMEOUT_S = 60.0  # one call on the node's actor (start included); a node that does not answer is gone


class NodeNotFoundError(RuntimeError):
    """No live Ray node has the address an environment asked for."""


class NodeProcessHost:
    """The actor on the environment's node: one ManagedProcess, tied to the actor's life."""

    def __init__(self, name: str, command: Sequence[str], log_path: str, env: Mapping[str, str], cwd: str) -> None:
        self.process = ManagedProcess(name, command, log_path=Path(log_path), env=env, cwd=Path(cwd),
                                      die_with_parent=True)

    def start(self) -> int:
        self.process.log_path.parent.mkdir(parents=True, exist_ok=True)
        return self.process.start().pid

    def returncode(self) -> int | None:
        return self.process.returncode

    def track_children(self) -> list[int]:
        self.process.track_children()
        return self.process.known_pids()

    def stop(self, timeout: float) -> tuple[int | None, list[int]]:
        """Stop it (see ManagedProcess.stop): its exit code, and the PIDs still alive afterwards."""
        return self.process.stop(timeout), self.process.alive_pids()


def ray_node_id(address: str, setting: str) -> str:
    """The id of the live Ray node whose address is `address`; stops naming `setting` when none is."""
    import ray

    alive = {node["NodeManagerAddress"]: node["NodeID"] for node in ray.nodes() if node.get("Alive")}
    if address not in alive:
        raise NodeNotFoundError(f"{setting}={address}: no live node of the Ray cluster has this address "
                                f"(live nodes: {', '.join(sorted(alive)) or 'none'})")
    return alive[address]


class NodeProcess:
    """The launcher's handle on a process started on another node: what the environment manager uses of a
    ManagedProcess (start, running, returncode, pid, known and alive PIDs, stop), through the actor."""

    def __init__(self, name: str, command: Sequence[str], *, node: str, node_id: str, log_path: Path,
                 env: Mapping[str, str]) -> None:
        self.name = name
        self.command = list(command)
        self.node = node
        self.node_id = node_id
        self.log_path = log_path
        self.env = dict(env)
        self.pid: int | None = None
        self.process: Any = None  # the actor once started (stop_processes-style callers test `.process`)
        self._known: list[int] = []
        self._alive_after_stop: list[int] | None = None
        self._returncode: int | None = None

    def start(self) -> NodeProcess:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = ray.remote(NodeProcessHost).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False), num_cpus=0,
            max_restarts=0, name=None)
        self.process = host.remote(self.name, self.command, str(self.log_path), self.env, os.getcwd())
        self.pid = ray.get(self.process.start.remote(), timeout=CALL_TIMEOUT_S)
        self._known = [self.pid]
        return self

    def _call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        import ray

        return ray.get(getattr(self.process, method).remote(*args), timeout=timeout)

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited; -1 when its node's actor is gone (the node, or Ray, died)."""
        if self.process is None or self._returncode is not None:
            return self._returncode
        import ray

        try:
            self._returncode = self._call("returncode")
        except (ray.exceptions.RayError, TimeoutError):
            self._returncode = -1
        return self._returncode

    def running(self) -> bool:
        return self.process is not None and self.returncode is None

    def track_children(self) -> None:
        if self.running():
            import ray

            try:
                self._known = self._call("track_children")
            except (ray.exceptions.RayError, TimeoutError):
                pass

    def known_pids(self) -> list[int]:
        return list(self._known)

    def alive_pids(self) -> list[int]:
        """PIDs on its node still alive: after `stop`, what the node reported; before, all known ones."""
        return list(self._alive_after_stop) if self._alive_after_stop is not None else self.known_pids()

    def stop(self, timeout: float = 10.0) -> int | None:
        stop_node_processes([self], timeout)
        return self._returncode


def stop_node_processes(processes: Sequence[NodeProcess], timeout: float) -> None:
    """Stop every started one at once within `timeout` (each node stops its own by PID), then end their
    actors; a node that does not answer in time has its actor killed, and with it the process
    (SIGTERM on the actor's death)."""
    started = [p for p in processes if p.process is not None and p._alive_after_stop is None]
    if not started:
        return
    import ray

    pending = {p.process.stop.remote(timeout): p for p in started}
    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout + 5.0)
    for ref in done:
        process = pending[ref]
        try:
            code, process._alive_after_stop = ray.get(ref)
            process._returncode = code if process._returncode is None else process._returncode
        except ray.exceptions.RayError:
            process._alive_after_stop = []  # the actor is gone, and with it the process
    for process in started:
        if process._alive_after_stop is None:
            process._alive_after_stop = process.known_pids()  # not answered: unknown, reported as alive
        if process._returncode is None:
            process._returncode = -1
        ray.kill(process.process)
