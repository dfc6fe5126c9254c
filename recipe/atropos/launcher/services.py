"""Start a whole Atropos + verl run from one YAML, and stop exactly what it started.

    python -m recipe.atropos.launcher --config recipe/atropos/config/atropos_integration.yaml \\
        [--set api.port=9000 ...] [trainer Hydra overrides ...]

(`python recipe/atropos/launch_atropos_verl_services.py ...` is the same program.)

Order: `run-api` (loopback unless configured; atroposlib's app behind the run's token,
`run_api_server.py`) -> the trainer (RayGRPOAtroposTrainer; verl starts
the rollout replicas and serves them as the policy server) -> wait until that server answers ->
each environment with `--openai.base_url` pointing at it, `--env.rollout_server_url` at the API
and `--env.inference_weight` from its weight, one at a time, each registered before the next.
The run's token (ATROPOS_RUN_TOKEN, or one made here) is written to `<run_dir>/token` (0600) and
reaches every process through its environment, never its command line (`require_token`).
Logs: `<run_dir>/logs/<process>.log` (the directory is the user's only). A progress bar follows the trainer's steps. An environment
process that exits mid-run is disconnected from the API and started again (`max_env_restarts`).

On exit, error, Ctrl-C or SIGTERM the processes are stopped in reverse order, by PID (their
process groups and every descendant seen), within bounded time. The exit code is the trainer's
(130 on Ctrl-C, 1 when start-up failed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from recipe.atropos.auth.bind_check import check_bind
from recipe.atropos.auth.ray_auth import enable_ray_token_auth, ray_token_auth_env, restore_ray_auth_env
from recipe.atropos.auth.run_token import TOKEN_ENV, auth_headers, make_run_token, run_token, write_token_file
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.launcher.env_activity import EnvActivityMonitor
from recipe.atropos.launcher.environment_manager import AtroposEnvironmentManager, EnvironmentStartError
from recipe.atropos.launcher.inference_manager import InferenceNotReadyError, UnifiedInferenceManager
from recipe.atropos.launcher.config import LauncherConfig, load_launcher_config
from recipe.atropos.launcher.managed_process import ManagedProcess, defer_if_starting, stop_processes
from recipe.atropos.net import direct_http
from recipe.atropos.net.addresses import node_address

logger = logging.getLogger("atropos_launcher")


class Shutdown(Exception):
    """SIGTERM or SIGINT reached the launcher."""


@dataclasses.dataclass
class LaunchResult:
    exit_code: int
    run_dir: Path
    env_names: dict[int, str]
    weights: dict[str, float]
    measured_shares: dict[str, float]
    started_pids: list[int]  # every process started and every descendant seen
    leftover_pids: list[int]  # those still alive after shutdown (should be none)
    steps: list[dict[str, Any]]
    env_restarts: int = 0
    env_warnings: list[str] = dataclasses.field(default_factory=list)  # silent environments named


def read_step_metrics(path: Path) -> list[dict[str, Any]]:
    """The trainer's per-step metrics from verl's file logger (one JSON record per line)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return records


def _total_steps(overrides: Sequence[str]) -> int | None:
    for override in reversed(list(overrides)):
        key, _, value = override.lstrip("+").partition("=")
        if key == "trainer.total_training_steps" and value.isdigit():
            return int(value)
    return None


class ServicesLauncher:
    """Owns the run's processes (see the module docstring)."""

    def __init__(self, config: LauncherConfig, trainer_overrides: Sequence[str] = ()) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir).resolve()
        self.log_dir = self.run_dir / "logs"
        self.metrics_file = self.run_dir / "metrics.jsonl"
        self.trainer_overrides = [*config.trainer.overrides, *trainer_overrides]
        self.token = run_token() or (make_run_token() if config.require_token else None)
        check_bind(config.api.host, self.token, "api.host")
        if self.token is None:
            logger.warning("require_token=false and no %s: run-api and the policy server accept requests from "
                           "anyone on this host", TOKEN_ENV)
        self.token_env = {TOKEN_ENV: self.token} if self.token else {}
        # The trainer's Ray cluster checks the same token (auth/ray_auth.py).
        self.ray_env = ray_token_auth_env(self.token, "require_token") if self.token else {}
        self.api = RunApiProcess(host=config.api.host, port=config.api.port or None, log_path=self.log_dir / "run-api.log",
                                 token=self.token, allow_no_token=self.token is None,
                                 advertise_host=config.api.advertise_host)
        self.inference = UnifiedInferenceManager(self.run_dir / "inference_endpoint.json")
        self.environments = AtroposEnvironmentManager(
            config.environments, self.api.url, self.log_dir, self.run_dir / "env_names.json",
            env_vars={**config.process_env, **self.token_env}, total_workers=config.total_workers,
            enforce_mix=config.enforce_mix, api_headers=auth_headers(self.token))
        self.trainer: ManagedProcess | None = None
        self.joined_ray = False  # only when an environment runs on another node (join_ray)
        self.replaced_ray_env: dict[str, str | None] = {}  # what join_ray changed in this process's environment
        self.activity = EnvActivityMonitor(self.api.url, config.silent_env_warning_s, auth_headers(self.token))
        self.env_warnings: list[str] = []

    def trainer_command(self) -> list[str]:
        spec = self.config.trainer
        return [
            sys.executable, "-m", spec.module, "--config-path", str(Path(spec.config_path).resolve()),
            "--config-name", spec.config_name,
            f"trainer.atropos.api_url={self.api.url}",
            f"trainer.atropos_inference.endpoint_file={self.inference.endpoint_file}",
            f"trainer.atropos.env_names_file={self.environments.names_file}",
            # each environment's share of admission control's window (used when that is on)
            "trainer.atropos_inference.admission_shares={" + ",".join(
                f"{name}:{share:.6g}" for name, share in self.config.weights.items()) + "}",
            f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={self.metrics_file}",
            *([] if self.token else ["trainer.atropos.require_token=false"]),
            *self.trainer_overrides,
        ]

    def _processes(self) -> list[ManagedProcess]:
        started = [self.api] + ([self.trainer] if self.trainer else []) + [p for _, p in self.environments.processes]
        return [p for p in started if p.process is not None]

    def start(self) -> None:
        if any(spec.node for spec in self.config.environments):
            self.join_ray()
        self.start_trainer()
        self.environments.start_all(self.inference, trainer_alive=self.trainer.running)
        for line in self.placement():
            print(f"[launcher] {line}", flush=True)

    def join_ray(self) -> None:
        """Join the run's Ray cluster (`ray_init`), to start environments on the nodes they name."""
        import ray

        if self.token:
            self.replaced_ray_env = enable_ray_token_auth(self.token, "require_token")
        logger.info("joining the Ray cluster (ray_init=%s) to start environments on other nodes", self.config.ray_init)
        ray.init(**{"log_to_driver": False, **self.config.ray_init})
        self.joined_ray = True
        self.environments.resolve_nodes()

    def placement(self) -> list[str]:
        """Where each process runs and which addresses it was handed (printed once everything is up)."""
        here = node_address()
        lines = [f"this node: {here}", f"run-api: pid {self.api.pid} on this node, advertised at {self.api.url}"]
        if self.trainer is not None:
            policy = self.inference.endpoint["base_url"] if self.inference.endpoint else "?"
            lines.append(f"trainer: pid {self.trainer.pid} on this node (its task runner pinned here; verl's workers "
                         f"wherever Ray places them), policy server advertised at {policy}")
        for slot in self.environments.slots:
            lines.append(f"{slot.label}: env_id {slot.env_id}, pid {slot.process.pid} on "
                         f"{self.environments.where(slot.spec)}, log {slot.process.log_path}")
        return lines

    def start_trainer(self) -> dict:
        """run-api, then the trainer; returns its policy server's endpoint record once it answers."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.chmod(0o700)  # environments' logs echo their rollout_server_url
        if self.token:
            write_token_file(self.run_dir / "token", self.token)
        self.metrics_file.unlink(missing_ok=True)
        self.environments.names_file.unlink(missing_ok=True)
        self.inference.reset()
        self.api.start(ready_timeout=self.config.api.startup_timeout)
        logger.info("run-api pid %d at %s", self.api.pid, self.api.url)
        trainer_env = {**self.config.process_env, **self.config.trainer.env, **self.token_env, **self.ray_env,
                       "VERL_FILE_LOGGER_PATH": str(self.metrics_file)}
        self.trainer = ManagedProcess("trainer", self.trainer_command(), log_path=self.log_dir / "trainer.log",
                                      env=trainer_env)
        self.trainer.start()  # recorded first: a signal during the start finds it
        logger.info("trainer pid %d; waiting for its policy server (log %s)", self.trainer.pid, self.trainer.log_path)
        endpoint = self.inference.wait_ready(self.config.trainer.ready_timeout, alive=self.trainer.running)
        logger.info("policy server ready at %s", endpoint["base_url"])
        return endpoint

    def monitor(self) -> int:
        """Until the trainer exits: a progress bar over its steps; returns its exit code."""
        total = _total_steps(self.trainer_overrides)
        bar = tqdm(total=total, desc="atropos+verl", unit="step", file=sys.stdout, dynamic_ncols=True)
        last_status = 0.0
        try:
            while self.trainer.running():
                time.sleep(1.0)
                self.trainer.track_children()
                self.environments.track_children()
                records = read_step_metrics(self.metrics_file)
                # Training steps only: a validation before training logs a record of its own (step 0).
                steps = [r for r in records if "training/global_step" in r.get("data", {})]
                if len(steps) > bar.n:
                    bar.update(len(steps) - bar.n)
                    data = steps[-1].get("data", {})
                    bar.set_postfix(score=f"{data.get('atropos/mean_score', float('nan')):.3f}",
                                    lag=f"{data.get('atropos/policy_lag_mean', float('nan')):.1f}")
                for line in self.environments.restart_dead(self.inference, self.config.max_env_restarts,
                                                           trainer_alive=self.trainer.running):
                    bar.write(f"[launcher] {line}")
                    logger.warning("%s", line)
                if time.monotonic() - last_status > self.config.status_interval:
                    last_status = time.monotonic()
                    for warning in self.activity.update(self.environments.slots, [r.get("data", {}) for r in steps]):
                        self.env_warnings.append(warning)
                        bar.write(f"[launcher] WARNING {warning}")
                        logger.warning("%s", warning)
                    bar.write(self._status_line(len(steps), total))
        finally:
            bar.close()
        return self.trainer.returncode

    def _status_line(self, steps: int, total: int | None) -> str:
        try:
            queue = direct_http.get(f"{self.api.url}/status", timeout=2,
                                 headers=auth_headers(self.token)).json().get("queue_size", "?")
        except (requests.RequestException, ValueError):
            queue = "?"
        alive = self.environments.alive()
        return (f"[launcher] step {steps}/{total or '?'} | environments alive {alive}/{len(self.environments.slots)}"
                f" | Atropos queue {queue} groups | groups queued/trained per environment: {self.activity.summary()}")

    def stop(self) -> list[int]:
        """Stop everything started, newest first (environments, trainer, run-api), within
        shutdown_timeout in all (then SIGKILL); the PIDs still alive afterwards (should be none)."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        self.environments.stop_all(max(0.0, deadline - time.monotonic()))
        stop_processes([self.trainer] if self.trainer is not None else [], max(0.0, deadline - time.monotonic()))
        stop_processes([self.api], max(0.0, deadline - time.monotonic()))
        if self.joined_ray:
            import ray

            ray.shutdown()
            restore_ray_auth_env(self.replaced_ray_env)  # a caller that goes on (a test, a notebook) gets it back
        return sorted({pid for p in self._processes() for pid in p.alive_pids()})

    def started_pids(self) -> list[int]:
        return sorted({pid for p in self._processes() for pid in p.known_pids()})


class _ShutdownSignals:
    """SIGINT/SIGTERM raise Shutdown, except while a child is being started (delivered right after
    it is recorded) and once cleanup runs (then logged: a second Ctrl-C must not abort the cleanup)."""

    def __init__(self) -> None:
        self.cleaning_up = False

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.cleaning_up:
            logger.warning("%s during cleanup: still stopping the processes this launcher started",
                           signal.Signals(signum).name)
            return
        if not defer_if_starting(signum):
            raise Shutdown(signal.Signals(signum).name)


def run_services(config: LauncherConfig, trainer_overrides: Sequence[str] = ()) -> LaunchResult:
    """Run the whole thing (module docstring) and report what happened."""
    launcher = ServicesLauncher(config, trainer_overrides)
    handler = _ShutdownSignals()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 1
    try:
        launcher.start()
        exit_code = launcher.monitor()
        logger.info("trainer exited with code %s", exit_code)
    except Shutdown as exc:
        logger.warning("%s: stopping every process this launcher started", exc)
        exit_code = 130
    except (EnvironmentStartError, InferenceNotReadyError, RuntimeError, TimeoutError, ConnectionError) as exc:
        logger.error("start-up failed: %s", exc)
        if launcher.trainer is not None:
            logger.error("trainer log: %s", launcher.trainer.log_path)
    finally:
        handler.cleaning_up = True
        try:
            leftover = launcher.stop()
        finally:
            for sig, previous_handler in previous.items():
                signal.signal(sig, previous_handler)
    if leftover:
        logger.error("processes still alive after shutdown: %s", leftover)
    steps = [record.get("data", {}) for record in read_step_metrics(launcher.metrics_file)]
    return LaunchResult(
        exit_code=exit_code,
        run_dir=launcher.run_dir,
        env_names=dict(launcher.environments.names),
        weights=config.weights,
        measured_shares=launcher.environments.measured_shares(steps),
        started_pids=launcher.started_pids(),
        leftover_pids=leftover,
        steps=steps,
        env_restarts=launcher.environments.restart_count,
        env_warnings=launcher.env_warnings,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="launcher YAML (its fields: docs/configuration.md)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="edit the launcher YAML, e.g. --set api.port=9000 --set environments.0.weight=0.5")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the trainer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_launcher_config(args.config, args.set)
    result = run_services(config, args.overrides)
    if result.measured_shares:
        shares = ", ".join(f"{name} {result.measured_shares.get(name, 0.0):.1%} (weight {weight:.0%})"
                           for name, weight in result.weights.items())
        print(f"[launcher] environment shares of trained sequences: {shares}")
    print(f"[launcher] exit code {result.exit_code}; logs in {result.run_dir / 'logs'}")
    return result.exit_code
