"""Hydra entry of the recipe: `python -m recipe.atropos.main_atropos [overrides]`.

The same run as `python -m verl.trainer.main_ppo --config-path recipe/atropos/config
--config-name gsm8k_grpo_example trainer_cls=...`: it reuses verl's own `main` (validation, Ray
start, task runner), with this recipe's config as the default and `trainer_cls` honoured by
verl_patches.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from recipe.atropos.auth.ray_auth import enable_ray_token_auth
from recipe.atropos.auth.run_token import run_token
import verl_patches  # noqa: F401  (applies the patches in this process; Ray workers load them as a verl plugin)


def run_atropos(config: DictConfig) -> None:
    """Validate the recipe-specific settings, turn Ray's token authentication on with the run's token
    (auth/ray_auth.py), then hand over to verl's `main_ppo.main`, which starts or joins Ray."""
    from verl.trainer import main_ppo

    if config.trainer.get("use_v1", False):
        raise ValueError("RayGRPOAtroposTrainer runs on verl's legacy trainer: set trainer.use_v1=false")
    if not config.get("trainer_cls"):
        raise ValueError("trainer_cls is empty: set trainer_cls=recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer")
    token = run_token()
    if token:
        enable_ray_token_auth(token, "trainer.atropos.require_token")
    main_ppo.main.__wrapped__(config)


@hydra.main(config_path="config", config_name="gsm8k_grpo_example", version_base=None)
def main(config: DictConfig) -> None:
    run_atropos(config)


if __name__ == "__main__":
    main()
