"""AtroposEnvironmentManager: the environments of a run, with their weights, started and stopped.

Each environment is a real Atropos `BaseEnv` process (`python -m module serve ...`). They are
started one at a time and each waits until the API has registered it, so environment ids follow
the config's order and the trainer can name `atropos/env_share/<name>` (names file
`{"<env_id>": "<name>"}`, written once all are registered: the trainer waits for it before its
first batch, so the first batches already hold every environment).

Weights: with `enforce_mix` (the default) every environment process gets Atropos's
`--env.min_batch_allocation` = its share, so the server puts that share of every batch from it
(and forms no batch while one has nothing queued). Otherwise Atropos forms batches from whatever
environments have queued, so the mix is the ratio of their production rates. Two levers set
those rates in both cases:
- `--env.max_num_workers`: the environment's concurrent generations, `total_workers` split by
  weight (and over its processes). On a shared policy server, throughput follows concurrency.
- `--env.inference_weight`: BaseEnv also throttles its requests by the share `/status-env` hands
  it, `max_token_length x weight` of the total; the weight is scaled by (longest
  max_token_length / this environment's) so that share follows the weight too.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import requests

from recipe.atropos.auth.bind_check import is_loopback
from recipe.atropos.launcher.inference_manager import UnifiedInferenceManager
from recipe.atropos.launcher.config import EnvSpec, LauncherConfigError, normalized_weights
from recipe.atropos.launcher.managed_process import ManagedProcess, stop_processes
from recipe.atropos.launcher.node_processes import NodeProcess, ray_node_id, stop_node_processes
from recipe.atropos.net import direct_http
from recipe.atropos.net.direct_http import no_proxy_env

logger = logging.getLogger(__name__)


class EnvironmentStartError(RuntimeError):
    """An environment exited or did not register with the API in time."""


@dataclasses.dataclass
class EnvSlot:
    """One configured environment process: the process running it now, and its API registration."""

    spec: EnvSpec
    index: int
    process: ManagedProcess | NodeProcess
    env_id: int
    restarts: int = 0

    @property
    def label(self) -> str:
        return f"env_{self.spec.name}_{self.index}"


def disconnect(api_url: str, env_id: int, headers: Mapping[str, str] | None = None) -> bool:
    """`POST /disconnect-env`: the API stops counting the environment (its min_batch_allocation included)."""
    try:
        answer = direct_http.post(f"{api_url}/disconnect-env", json={"env_id": env_id}, timeout=5, headers=headers)
        return answer.ok and answer.json().get("status") == "success"
    except (requests.RequestException, ValueError):
        return False


def status_env(api_url: str, env_id: int, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> dict | None:
    """`GET /status-env` of environment `env_id` ({} when the answer is not JSON); None when the API does
    not know it (it answers only for registered ids) or does not answer."""
    try:
        answer = direct_http.get(f"{api_url}/status-env", json={"env_id": env_id}, timeout=timeout, headers=headers)
    except requests.RequestException:
        return None
    if not answer.ok:
        return None
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def registered(api_url: str, env_id: int, headers: Mapping[str, str] | None = None) -> bool:
    """Whether the API knows environment `env_id`."""
    return status_env(api_url, env_id, headers=headers) is not None


class AtroposEnvironmentManager:
    def __init__(self, specs: Iterable[EnvSpec], api_url: str, log_dir: Path, names_file: Path,
                 env_vars: Mapping[str, str] | None = None, python: str = sys.executable, total_workers: int = 16,
                 enforce_mix: bool = True, api_headers: Mapping[str, str] | None = None) -> None:
        self.specs = list(specs)
        self.api_headers = dict(api_headers or {})  # the run's token, for the API calls made here
        self.total_workers = total_workers
        self.enforce_mix = enforce_mix
        self.api_url = api_url
        self.log_dir = Path(log_dir)
        self.names_file = Path(names_file)
        self.env_vars = dict(env_vars or {})
        self.python = python
        self.processes: list[tuple[EnvSpec, ManagedProcess | NodeProcess]] = []  # every one started, restarts included
        self.node_ids: dict[str, str] = {}  # Ray node id of each `node` an environment names (resolve_nodes)
        self.slots: list[EnvSlot] = []
        self.restart_count = 0
        self.names: dict[int, str] = {}  # every env_id registered over the run -> its environment's name
        self.weights = normalized_weights(self.specs)
        self._check_reachable_from_other_nodes()

    def inference_weight(self, spec: EnvSpec) -> float:
        longest = max(s.max_token_length for s in self.specs)
        return spec.weight * longest / spec.max_token_length

    def workers(self, spec: EnvSpec) -> int:
        """Concurrent generations of one process of `spec`: its weight's share of `total_workers`."""
        return max(1, round(self.total_workers * self.weights[spec.name] / spec.processes))

    def min_batch_allocation(self, spec: EnvSpec) -> float | None:
        """Share of every batch reserved for one process of `spec` (None: no reservation)."""
        if spec.min_batch_allocation is not None:
            return spec.min_batch_allocation / spec.processes
        if self.enforce_mix and (len(self.specs) > 1 or spec.processes > 1):
            return self.weights[spec.name] / spec.processes
        return None

    def command(self, spec: EnvSpec, inference: UnifiedInferenceManager) -> list[str]:
        tokenizer = inference.endpoint.get("tokenizer") if inference.endpoint else None
        tokenizer_args = ["--env.tokenizer_name", tokenizer, "--openai.tokenizer_name", tokenizer] if tokenizer else []
        allocation = self.min_batch_allocation(spec)
        allocation_args = ["--env.min_batch_allocation", f"{allocation:.6g}"] if allocation is not None else []
        return [
            self.python, *spec.target(), "serve",
            "--env.rollout_server_url", self.api_url,
            "--env.group_size", str(spec.group_size),
            "--env.max_token_length", str(spec.max_token_length),
            "--env.inference_weight", f"{self.inference_weight(spec):.6g}",
            "--env.max_num_workers", str(self.workers(spec)),
            "--env.use_wandb", "false",
            # run-api registers it under this name (BaseEnv sends wandb_name, and run-api answers 422 to None)
            "--env.wandb_name", spec.name,
            "--openai.server_type", "vllm",
            *allocation_args,
            *inference.environment_args(spec.name), *tokenizer_args,
            "--slurm", "false",
            *spec.args,
        ]

    def start_all(self, inference: UnifiedInferenceManager, trainer_alive: Callable[[], bool] = lambda: True) -> None:
        """Start every process of every environment, each registered before the next starts; then
        write the names file, which also tells the trainer that every environment is up."""
        for spec in self.specs:
            for index in range(spec.processes):
                process, env_id = self.start_one(spec, index, inference, trainer_alive)
                self.slots.append(EnvSlot(spec, index, process, env_id))
        self._write_names()

    def restart_dead(self, inference: UnifiedInferenceManager, max_restarts: int,
                     trainer_alive: Callable[[], bool] = lambda: True) -> list[str]:
        """Disconnect and start again every environment process that exited, up to `max_restarts`
        times each; returns what was done, one line per process (logged by the launcher)."""
        report = []
        for slot in self.slots:
            if slot.process.running() or slot.restarts > max_restarts:
                continue
            code = slot.process.returncode
            disconnect(self.api_url, slot.env_id, self.api_headers)
            if slot.restarts == max_restarts:
                slot.restarts += 1  # reported once
                report.append(f"{slot.label} (env_id {slot.env_id}) exited with code {code}; max_env_restarts="
                              f"{max_restarts} reached: left stopped and disconnected (log {slot.process.log_path})")
                continue
            slot.restarts += 1
            try:
                slot.process, new_id = self.start_one(slot.spec, slot.index, inference, trainer_alive)
            except EnvironmentStartError as exc:
                self.processes[-1][1].stop(timeout=10.0)  # the new process, if it is still up
                report.append(f"{slot.label} exited with code {code}; restart {slot.restarts}/{max_restarts} failed: {exc}")
                continue
            report.append(f"{slot.label} exited with code {code}; restarted (restart {slot.restarts}/{max_restarts}): "
                          f"env_id {slot.env_id} disconnected, registered as env_id {new_id}, pid {slot.process.pid}")
            slot.env_id = new_id
            self.restart_count += 1
            self._write_names()
        return report

    def _check_reachable_from_other_nodes(self) -> None:
        """An environment on another node must be told a run-api address that is not loopback."""
        for i, spec in enumerate(self.specs):
            if spec.node and is_loopback(urlsplit(self.api_url).hostname or ""):
                raise LauncherConfigError(
                    f"environments[{i}].node={spec.node}: run-api is advertised at {self.api_url}, a loopback "
                    f"address, which another node cannot reach: set api.host to 0.0.0.0 (or this node's address)")

    def resolve_nodes(self) -> None:
        """The Ray node of every environment that names one (the launcher has joined the cluster); stops
        naming `environments[i].node` when no live node has that address."""
        for i, spec in enumerate(self.specs):
            if spec.node:
                self.node_ids[spec.node] = ray_node_id(spec.node, f"environments[{i}].node")

    def where(self, spec: EnvSpec) -> str:
        return f"node {spec.node} (through Ray)" if spec.node else "this node"

    def start_one(self, spec: EnvSpec, index: int, inference: UnifiedInferenceManager,
                  trainer_alive: Callable[[], bool] = lambda: True) -> tuple[ManagedProcess | NodeProcess, int]:
        """Start one process (on its node) and wait until the API registered it; (process, its env_id)."""
        label = f"env_{spec.name}_{index}"
        policy_url = inference.endpoint["base_url"] if inference.endpoint else None
        if spec.node and policy_url and is_loopback(urlsplit(policy_url).hostname or ""):
            raise EnvironmentStartError(
                f"{label} runs on node {spec.node} but the policy server is advertised at {policy_url}, a loopback "
                f"address: set trainer.atropos_inference.host=0.0.0.0 (or the node's address)")
        # No proxy between an environment and run-api or the policy server (net/direct_http.py).
        direct = no_proxy_env({**os.environ, **self.env_vars}, [self.api_url, *([policy_url] if policy_url else [])])
        command, log_path = self.command(spec, inference), self.log_dir / f"{label}.log"
        if spec.node:
            process = NodeProcess(label, command, node=spec.node, node_id=self.node_ids[spec.node], log_path=log_path,
                                  env={**self.env_vars, **direct})
        else:
            process = ManagedProcess(label, command, log_path=log_path, env={**self.env_vars, **direct})
        self.processes.append((spec, process))  # owned before it exists: a signal during start finds it
        process.start()
        env_id = len(self.names)
        deadline = time.monotonic() + spec.registration_timeout
        while not registered(self.api_url, env_id, self.api_headers):
            if not process.running():
                raise EnvironmentStartError(f"{label} exited with code {process.returncode} before registering "
                                            f"(log on {self.where(spec)}: {process.log_path})")
            if not trainer_alive():
                raise EnvironmentStartError(f"the trainer exited while {label} was registering")
            if time.monotonic() > deadline:
                raise EnvironmentStartError(f"{label} did not register with {self.api_url} within "
                                            f"{spec.registration_timeout:.0f}s (log on {self.where(spec)}: "
                                            f"{process.log_path})")
            time.sleep(0.5)
        self.names[env_id] = spec.name
        logger.info("%s registered as env_id %d: pid %d on %s, told run-api %s and the policy server %s", label,
                    env_id, process.pid, self.where(spec), self.api_url, policy_url)
        return process, env_id

    def _write_names(self) -> None:
        tmp = self.names_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in self.names.items()}))
        tmp.replace(self.names_file)

    def alive(self) -> int:
        return sum(slot.process.running() for slot in self.slots)

    def track_children(self) -> None:
        for _, process in self.processes:
            process.track_children()

    def stop_all(self, timeout: float) -> None:
        """Stop every environment process, on this node and on others at once, within `timeout` in all."""
        remote = [process for _, process in self.processes if isinstance(process, NodeProcess)]
        local = [process for _, process in self.processes if isinstance(process, ManagedProcess)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            remote_stopped = pool.submit(stop_node_processes, remote, timeout)
            stop_processes(local, timeout)
            remote_stopped.result()

    def measured_shares(self, step_metrics: Iterable[Mapping[str, float]]) -> dict[str, float]:
        """Share of trained sequences per environment name over the run (sequence-weighted)."""
        sequences: collections.Counter = collections.Counter()
        for metrics in step_metrics:
            rows = metrics.get("atropos/total_sequences", 0.0)
            for key, share in metrics.items():
                if key.startswith("atropos/env_share/"):
                    sequences[key.removeprefix("atropos/env_share/")] += share * rows
        total = sum(sequences.values())
        return {name: count / total for name, count in sequences.items()} if total else {}
