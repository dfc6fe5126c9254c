"""The launcher's YAML: the API server, the trainer's Hydra overrides, the environments with weights.

    run_dir: outputs/atropos_run        # logs, endpoint and names files
    total_workers: 16                   # generation workers, split by weight
    enforce_mix: true                   # each batch holds each environment's share
    silent_env_warning_s: 300           # name an environment that sends nothing for this long
    process_env: {WANDB_MODE: disabled} # environment variables of the trainer and environments
    api: {host: 127.0.0.1, port: 8000}  # port 0: a free one; advertise_host: what clients are told
                                        # (default: host, or this node's address when host is 0.0.0.0)
    require_token: true                 # every listener needs the run's token (docs/security.md)
    trainer:
      module: recipe.atropos.main_atropos
      config_name: gsm8k_grpo_example   # under config_path (default: recipe/atropos/config)
      overrides: [trainer.total_training_steps=100, ...]
    environments:
      - name: gsm8k
        module: recipe.atropos.envs.gsm8k_env   # or path: my_envs/foo.py (run by recipe.atropos.envs.run_env)
        weight: 0.7
        group_size: 8
        max_token_length: 1024
        processes: 1
        args: ["--env.some_flag", "value"]
        node: 10.0.0.12                        # optional: run it on this Ray node (ray_init joins the cluster)

Every field is checked here; an error names it (e.g. `environments[1].weight`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from recipe.atropos.policy_server.environment_paths import environment_path
from recipe.atropos.structured_config import typed_config

RECIPE_CONFIG_DIR = Path(__file__).parents[1] / "config"


class LauncherConfigError(ValueError):
    """A launcher config field is missing or wrong (the message names it)."""


@dataclasses.dataclass(frozen=True)
class ApiSpec:
    host: str = "127.0.0.1"  # bind address of run-api (beyond loopback only with the run's token)
    port: int = 8000  # 0: a free port
    startup_timeout: float = 60.0  # seconds until run-api must answer
    advertise_host: str | None = None  # what environments and the trainer are told (net/addresses.py)


@dataclasses.dataclass(frozen=True)
class TrainerSpec:
    module: str = "recipe.atropos.main_atropos"  # the trainer's Hydra entry (python -m)
    config_path: str = str(RECIPE_CONFIG_DIR)  # folder of its Hydra configs
    config_name: str = "gsm8k_grpo_example"  # the Hydra config in config_path
    overrides: list[str] = dataclasses.field(default_factory=list)  # Hydra overrides, e.g. actor_rollout_ref.model.path=...
    ready_timeout: float = 900.0  # until its policy server answers (model load, Ray start-up)
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # environment variables of the trainer alone


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    name: str  # its name in metrics (atropos/env_share/<name>) and logs
    weight: float  # its share of each batch, relative to the other environments' weights
    group_size: int  # completions per prompt it sends as one group (--env.group_size)
    max_token_length: int  # longest sequence it may send, prompt and completion (--env.max_token_length)
    module: str | None = None  # the Python module of its BaseEnv (python -m), or
    path: str | None = None  # the file of its BaseEnv; one of module and path
    processes: int = 1  # copies of it, each registered with run-api
    args: list[str] = dataclasses.field(default_factory=list)  # more flags of its CLI, e.g. ["--env.seed", "3"]
    registration_timeout: float = 300.0  # seconds until it must have registered with run-api
    min_batch_allocation: float | None = None  # default: its weight's share when enforce_mix is on
    # The Ray node to run it on, by its address (`ray status`); None: the launcher's own node.
    # Started through the cluster (`ray_init`): see launcher/node_processes.py.
    node: str | None = None

    def target(self) -> list[str]:
        """The Python arguments that run it: through `recipe.atropos.envs.run_env`, which applies the
        atroposlib 0.4.0 fixes first (recipe/atropos/envs/atropos_compat)."""
        return ["-m", "recipe.atropos.envs.run_env", self.module or str(Path(self.path).resolve())]


@dataclasses.dataclass(frozen=True)
class LauncherConfig:
    run_dir: str  # logs, the run's token, the endpoint and names files
    api: ApiSpec  # run-api (below)
    trainer: TrainerSpec  # the trainer (below)
    environments: list[EnvSpec]  # one entry per environment (below)
    process_env: dict[str, str] = dataclasses.field(default_factory=dict)  # for the trainer and environments
    # Concurrent generation workers shared by all environments in proportion to their weights
    # (`--env.max_num_workers` of each process); see environment_manager.py.
    total_workers: int = 16
    # Every batch holds each environment's share (Atropos's min_batch_allocation = the weight's share).
    # The price: while an environment has nothing queued, no batch forms (the trainer waits up to
    # trainer.atropos.max_wait_time, then falls back or stops). false: the mix is the production rate.
    enforce_mix: bool = True
    # An environment process that exits during the run is disconnected from the API (`/disconnect-env`,
    # so its batch allocation stops holding batches back) and started again (it registers anew), at
    # most this many times per process. 0: leave it dead (the trainer keeps polling the others).
    max_env_restarts: int = 3
    shutdown_timeout: float = 30.0  # seconds the run's processes get in all to stop after SIGTERM, then SIGKILL
    status_interval: float = 10.0  # seconds between the launcher's status lines
    # An environment alive but with nothing queued and nothing new trained for this long is named in a
    # warning (again every as many seconds while it stays silent); 0: no warning. See env_activity.py.
    silent_env_warning_s: float = 300.0
    # Every listener of the run (run-api, the policy server) needs the run's secret: ATROPOS_RUN_TOKEN
    # when set, else one made for the run; written to <run_dir>/token (0600) and handed to the
    # processes through their environment. false: no token (with a warning) when none is set, for
    # local experiments on loopback (api.host beyond loopback then refuses to start).
    require_token: bool = True
    # ray.init arguments of the launcher, which joins the cluster only when an environment names a
    # `node` (it starts environments there through Ray).
    ray_init: dict[str, Any] = dataclasses.field(default_factory=lambda: {"address": "auto"})

    @property
    def weights(self) -> dict[str, float]:
        return normalized_weights(self.environments)


def normalized_weights(environments: Sequence[EnvSpec]) -> dict[str, float]:
    """Each environment's share of the mix (weights normalised to sum 1)."""
    total = sum(env.weight for env in environments)
    return {env.name: env.weight / total for env in environments}


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise LauncherConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return typed_config(cls, raw, where=where, error=LauncherConfigError)


def _check_env(env: EnvSpec, where: str) -> None:
    try:
        environment_path(env.name)
    except ValueError as exc:
        raise LauncherConfigError(f"{where}.name: {exc}") from None
    if bool(env.module) == bool(env.path):
        raise LauncherConfigError(f"{where}: give exactly one of 'module' and 'path'")
    if env.min_batch_allocation is not None and not 0 < env.min_batch_allocation <= 1:
        raise LauncherConfigError(f"{where}.min_batch_allocation: must be in (0, 1], got {env.min_batch_allocation}")
    if not env.weight > 0:
        raise LauncherConfigError(f"{where}.weight: must be > 0, got {env.weight}")
    for field in ("group_size", "max_token_length", "processes"):
        if not isinstance(getattr(env, field), int) or getattr(env, field) < 1:
            raise LauncherConfigError(f"{where}.{field}: must be a positive integer, got {getattr(env, field)!r}")


def load_launcher_config(path: str | Path, dotlist: Sequence[str] = ()) -> LauncherConfig:
    """The YAML at `path` with `key=value` edits (e.g. `api.port=9000`, `environments.0.weight=0.5`)."""
    conf = OmegaConf.load(path)
    # OmegaConf.update, one edit at a time: OmegaConf.from_dotlist builds mappings only, so an edit of
    # a list item (environments.0.weight) could not be merged into the YAML's list.
    for item in dotlist:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LauncherConfigError(f"edit {item!r}: expected KEY=VALUE, e.g. environments.0.weight=0.5")
        OmegaConf.update(conf, key, yaml.safe_load(value), force_add=True)
    raw = OmegaConf.to_container(conf, resolve=True)
    if not isinstance(raw, dict):
        raise LauncherConfigError(f"{path}: expected a mapping at the top level")
    envs_raw = raw.pop("environments", None)
    if not envs_raw:
        raise LauncherConfigError(f"{path}: 'environments' must list at least one environment")
    environments = [_build(EnvSpec, env, f"environments[{i}]") for i, env in enumerate(envs_raw)]
    for i, env in enumerate(environments):
        _check_env(env, f"environments[{i}]")
    names = [env.name for env in environments]
    if len(set(names)) != len(names):
        raise LauncherConfigError(f"environments: names must be unique, got {names}")
    if not isinstance(raw.get("total_workers", 16), int) or raw.get("total_workers", 16) < 1:
        raise LauncherConfigError(f"total_workers: must be a positive integer, got {raw.get('total_workers')!r}")
    if not isinstance(raw.get("max_env_restarts", 3), int) or raw.get("max_env_restarts", 3) < 0:
        raise LauncherConfigError(f"max_env_restarts: must be an integer >= 0, got {raw.get('max_env_restarts')!r}")
    for key in ("status_interval", "silent_env_warning_s", "shutdown_timeout"):
        if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], (int, float)) or raw[key] < 0):
            raise LauncherConfigError(f"{key}: must be a number of seconds >= 0, got {raw[key]!r}")
    raw.setdefault("run_dir", "outputs/atropos_run")
    raw["api"] = _build(ApiSpec, raw.get("api", {}), "api")
    raw["trainer"] = _build(TrainerSpec, raw.get("trainer", {}), "trainer")
    return _build(LauncherConfig, {**raw, "environments": environments}, str(path))
