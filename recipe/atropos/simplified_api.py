"""The simplified API our users first asked for, as thin names over the recipe's real parts.

- `SimpleAtroposClient`: one call returns a `TrajectoryBatch` from the real trajectory API (it
  registers on the first call; `AtroposEnvironmentClient` underneath).
- `SimpleAtroposWorker`: `AtroposBatchSource` with its journal opened: each step's validated groups.
- `SimpleAtroposTrainer`: run-api, the trainer and the weighted environments started from Python,
  trained, and stopped (the launcher, `launcher/services.py`, as a class).
- `AtroposEnvironmentManager`, `UnifiedInferenceManager`, `TrajectoryBatch`: the launcher's and the
  data path's own classes.

Atropos has no `POST /trajectory_batch`: a trainer registers (`POST /register`) and pops batches
(`GET /batch`); environments choose their own tasks and are weighted by the launcher.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipe.atropos.data.scored_group import TrajectoryBatch
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.launcher.config import LauncherConfig, load_launcher_config
from recipe.atropos.launcher.environment_manager import AtroposEnvironmentManager
from recipe.atropos.launcher.inference_manager import UnifiedInferenceManager
from recipe.atropos.launcher.services import LaunchResult, run_services
from recipe.atropos.source.batch_journal import RunIdentity
from recipe.atropos.source.batch_source import AtroposBatchSource, Registration

__all__ = ["AtroposEnvironmentManager", "SimpleAtroposClient", "SimpleAtroposTrainer", "SimpleAtroposWorker",
           "TrajectoryBatch", "UnifiedInferenceManager"]


class SimpleAtroposClient(AtroposEnvironmentClient):
    """`trajectory_batch()` -> the next `TrajectoryBatch` (None when none came within max_wait_time).

    Args:
        api_url: where `run-api` listens.
        batch_size: sequences per batch (what the API hands out at a time).
        max_token_len: the longest sequence accepted (longer ones make their group invalid).
        num_steps: how many batches the run will ask for (told to the API at registration).
        settings: any other key of trainer.atropos (config/atropos_client.yaml).
    """

    def __init__(self, api_url: str = "http://localhost:8000", *, batch_size: int, max_token_len: int,
                 num_steps: int = 1_000_000, **settings: Any) -> None:
        super().__init__({"api_url": api_url, **settings}, max_token_len=max_token_len)
        self.registration = Registration(batch_size=batch_size, max_token_len=max_token_len, num_steps=num_steps)
        self.registered = False

    def trajectory_batch(self, max_wait_time: float | None = None) -> TrajectoryBatch | None:
        if not self.registered:
            self.register(**dataclasses.asdict(self.registration))
            self.registered = True
        return super().trajectory_batch(max_wait_time)


class SimpleAtroposWorker(AtroposBatchSource):
    """`next_batch(step)` -> (that step's validated groups, metrics), journaled under `journal_dir`.

    The batch source the trainer uses, opened for a run of its own (`experiment`): a run of the same
    experiment started again replays what the last one pulled but did not finish. Call
    `step_trained(step, checkpointing=False)` once a step's groups are used, `close()` at the end.
    """

    def __init__(self, api_url: str = "http://localhost:8000", *, batch_size: int, max_token_len: int,
                 num_steps: int, journal_dir: str | Path, experiment: str = "simple", **settings: Any) -> None:
        client = AtroposEnvironmentClient({"api_url": api_url, **settings}, max_token_len=max_token_len)
        super().__init__(client, Registration(batch_size=batch_size, max_token_len=max_token_len, num_steps=num_steps),
                         max_policy_lag=client.config.max_policy_lag)
        self.open(str(journal_dir), RunIdentity(project="simple_atropos", experiment=experiment, resume_mode="auto",
                                                resumed_step=0, checkpoint_folder=None))


class SimpleAtroposTrainer:
    """`train()` runs run-api, RayGRPOAtroposTrainer and the weighted environments of a launcher YAML,
    stops every process it started, and returns what happened (`LaunchResult`).

    Args:
        config: a launcher YAML path (e.g. recipe/atropos/config/demo_cpu.yaml) or a `LauncherConfig`.
        edits: `KEY=VALUE` edits of the YAML (e.g. `environments.0.weight=0.5`).
        trainer_overrides: Hydra overrides for the trainer (e.g. `trainer.total_training_steps=10`).
    """

    def __init__(self, config: str | Path | LauncherConfig, *, edits: Sequence[str] = (),
                 trainer_overrides: Sequence[str] = ()) -> None:
        self.config = config if isinstance(config, LauncherConfig) else load_launcher_config(config, edits)
        self.trainer_overrides = list(trainer_overrides)

    @property
    def weights(self) -> dict[str, float]:
        """Each environment's share of the mix."""
        return self.config.weights

    def train(self) -> LaunchResult:
        return run_services(self.config, self.trainer_overrides)
