"""The `trainer_cls` path the configs and README name: `recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer`.

The trainer lives in `recipe.atropos.atropos_ray_trainer`.
"""

from recipe.atropos.atropos_ray_trainer import RayGRPOAtroposTrainer

__all__ = ["RayGRPOAtroposTrainer"]
