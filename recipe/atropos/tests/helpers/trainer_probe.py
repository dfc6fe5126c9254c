"""A RayPPOTrainer subclass that only proves it was built (used by the trainer_cls test)."""

from verl.trainer.ppo.ray_trainer import RayPPOTrainer


class TrainerBuilt(RuntimeError):
    pass


class ProbeTrainer(RayPPOTrainer):
    def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
        names = sorted(kwargs)
        raise TrainerBuilt(f"ProbeTrainer built by the task runner with {names}")
