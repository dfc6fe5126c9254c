"""Hydra entry of the recipe: `python -m recipe.atropos.main_atropos [overrides]`.

The same run as `python -m verl.trainer.main_ppo --config-path recipe/atropos/config
--config-name gsm8k_grpo_example trainer_cls=...`: it runs verl's own steps (validation, Ray start,
task runner), with this recipe's config as the default, `trainer_cls` honoured by verl_patches, Ray's
token authentication on, and the task runner on this process's node.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from recipe.atropos.auth.ray_auth import enable_ray_token_auth
from recipe.atropos.auth.run_token import run_token
from recipe.atropos.task_runner_placement import OnDriverNode
import verl_patches  # noqa: F401  (applies the patches in this process; Ray workers load them as a verl plugin)


def run_atropos(config: DictConfig) -> None:
    """Validate the recipe-specific settings, turn Ray's token authentication on with the run's token
    (auth/ray_auth.py), then run what verl's `main_ppo.main` runs (its checks, then `run_ppo`, which
    starts or joins Ray) with the task runner on this node (task_runner_placement.py)."""
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.main_ppo_v0 import TaskRunner
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    if config.trainer.get("use_v1", False):
        raise ValueError("RayGRPOAtroposTrainer runs on verl's legacy trainer: set trainer.use_v1=false")
    if not config.get("trainer_cls"):
        raise ValueError("trainer_cls is empty: set trainer_cls=recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer")
    token = run_token()
    if token:
        enable_ray_token_auth(token, "trainer.atropos.require_token")
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=OnDriverNode(TaskRunner))


@hydra.main(config_path="config", config_name="gsm8k_grpo_example", version_base=None)
def main(config: DictConfig) -> None:
    run_atropos(config)


if __name__ == "__main__":
    main()
