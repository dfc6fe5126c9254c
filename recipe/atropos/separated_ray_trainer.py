"""SeparatedAtroposTrainer: RayGRPOAtroposTrainer with the rollout replicas on their own resource pool.

The worker layout of verl's `verl.experimental.separation` (the base of its one-step-off-policy and
fully-async trainers), everything else the product's loop: the actor (and a reference model, when
one is used) trains on the trainer pool, the rollout replicas that the policy server serves to the
environments run standalone on pools of their own, and the updated weights are pushed to them
after each step by a checkpoint engine (`actor_rollout_ref.rollout.checkpoint_engine`). The
replicas never sleep for an update, so environments keep generating while the actor trains; they
only wait while the weights travel.

Select it with `+topology=separated` (config/topology/separated.yaml). verl's task runner builds the
colocated roles; `separate_rollout_roles` turns them into separation's before verl builds a worker.
"""

from __future__ import annotations

from typing import Any

import ray
from omegaconf import DictConfig
from verl.experimental.one_step_off_policy.ray_trainer import OneStepOffRayTrainer
from verl.trainer.ppo.utils import Role
from verl.trainer.distillation.losses import is_distillation_enabled

from recipe.atropos.atropos_ray_trainer import RayGRPOAtroposTrainer


def check_separated_config(config: DictConfig) -> None:
    """Stop before verl builds anything when the separated layout cannot be what was asked for."""
    actor_rollout_ref = config.actor_rollout_ref
    rollout = actor_rollout_ref.rollout
    if actor_rollout_ref.hybrid_engine:
        raise ValueError("SeparatedAtroposTrainer puts the rollout replicas on their own pool: set "
                         "actor_rollout_ref.hybrid_engine=false (or use RayGRPOAtroposTrainer for the colocated layout)")
    if int(rollout.nnodes) <= 0 or int(rollout.n_gpus_per_node) <= 0:
        raise ValueError(f"SeparatedAtroposTrainer sizes the rollout pool by actor_rollout_ref.rollout.nnodes "
                         f"({rollout.nnodes}) and actor_rollout_ref.rollout.n_gpus_per_node ({rollout.n_gpus_per_node}): "
                         "set both > 0")
    if rollout.checkpoint_engine.backend == "naive":
        raise ValueError("actor_rollout_ref.rollout.checkpoint_engine.backend=naive updates a rollout inside the "
                         "actor's own worker, which the separated layout has none of: use nccl (GPU) or ray "
                         "(custom_backend_module=verl_patches.ray_checkpoint_engine, any device)")
    if is_distillation_enabled(config.get("distillation")):
        raise ValueError("SeparatedAtroposTrainer builds no teacher model: turn distillation off (the environments' "
                         "own teacher fields, trainer.atropos.distill_loss_coef, work in both layouts)")


def separate_rollout_roles(role_worker_mapping: dict, resource_pool_manager: Any) -> None:
    """verl's task runner maps the fused actor+rollout(+reference) role to the trainer pool; separation
    trains `Role.Actor` there (and `Role.RefPolicy` beside it when the reference was fused in), both
    `DetachActorWorker`s. The rollout replicas get their own pools when verl starts them."""
    from verl.experimental.separation.engine_workers import DetachActorWorker

    pools = resource_pool_manager.mapping
    fused = Role.ActorRolloutRef if Role.ActorRolloutRef in role_worker_mapping else Role.ActorRollout
    role_worker_mapping.pop(fused)
    trainer_pool = pools.pop(fused)
    roles = [Role.Actor, Role.RefPolicy] if fused == Role.ActorRolloutRef else [Role.Actor]
    for role in roles:
        role_worker_mapping[role] = ray.remote(DetachActorWorker)
        pools[role] = trainer_pool


class SeparatedAtroposTrainer(RayGRPOAtroposTrainer, OneStepOffRayTrainer):
    """The Atropos loop on verl's separated worker layout (module docstring).

    verl's one-step-off trainer supplies the layout (its non-hybrid `__init__`, the actor-only worker
    classes, the standalone `LLMServerManager`, the checkpoint engine manager); RayGRPOAtroposTrainer
    supplies everything else, its `fit` included."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # verl's signature: (config, tokenizer, role_worker_mapping, resource_pool_manager, ...)
        config = kwargs.get("config", args[0] if args else None)
        check_separated_config(config)
        separate_rollout_roles(kwargs.get("role_worker_mapping", args[2] if len(args) > 2 else None),
                               kwargs.get("resource_pool_manager", args[3] if len(args) > 3 else None))
        super().__init__(*args, **kwargs)
        # What verl's colocated __init__ sets and the one-step-off one does not (no teacher: checked above).
        self.use_teacher_policy = False
        self.teacher_model_manager = None
        self.distillation_config = None
        self._init_dump_executor()
        self.pause_inference_while_training = False

    def init_workers(self) -> None:
        super().init_workers()
        # What verl built, as verl reports its own layout (print: the task runner's log shows it).
        replica_pools = [replica.resource_pool.name_prefix for replica in self.llm_server_manager.get_replicas()]
        print(f"separated topology: the actor trains on pool {self.resource_pool_manager.mapping[Role.Actor]}, the "
              f"policy server's replicas run on {replica_pools}; weights travel by the "
              f"'{self.config.actor_rollout_ref.rollout.checkpoint_engine.backend}' checkpoint engine", flush=True)

    def _free_replicas_for_training(self, timing_raw: dict) -> None:
        """Nothing to free: the replicas have their own devices and keep serving the environments."""
