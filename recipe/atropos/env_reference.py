"""The environments' `ref_logprobs` as the only reference: no reference model is loaded.

verl fuses the reference model into the actor's worker (role `actor_rollout_ref`) whenever a KL
term is on. With `trainer.atropos.env_ref_logprobs_only`, every trained group carries its
environment's reference log-probs (a group without them is dropped, atropos/invalid/ref_logprobs),
so the worker is built as plain `actor_rollout`: no second copy of the weights, no reference pass.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from verl.trainer.ppo.utils import Role, need_reference_policy

from recipe.atropos.data.client_config import AtroposClientConfig


def check_env_reference_only(atropos: AtroposClientConfig, config: DictConfig) -> None:
    """Stop when env_ref_logprobs_only would change nothing (it never silently turns off)."""
    if not atropos.env_ref_logprobs_only:
        return
    if not atropos.use_env_ref_logprobs:
        raise ValueError("trainer.atropos.env_ref_logprobs_only=true needs trainer.atropos.use_env_ref_logprobs=true "
                         "(the environments' ref_logprobs are what replaces the reference model)")
    if not need_reference_policy(config):
        raise ValueError("trainer.atropos.env_ref_logprobs_only=true, but no reference is used: turn on "
                         "actor_rollout_ref.actor.use_kl_loss or algorithm.use_kl_in_reward, or leave it false")
    if atropos.fallback_to_grpo:
        raise ValueError("trainer.atropos.env_ref_logprobs_only=true loads no reference model, but "
                         "trainer.atropos.fallback_to_grpo=true trains local GRPO steps, whose rows carry no ref_logprobs: "
                         "set fallback_to_grpo=false")


def build_without_reference_model(role_worker_mapping: dict, resource_pool_manager: Any) -> bool:
    """Turn the fused actor+reference role into the plain actor role (same worker class and pool), or
    drop the reference's own role (the separated layout), so no worker loads reference weights; True
    when a reference model was to be built."""
    pools = resource_pool_manager.mapping
    if Role.RefPolicy in role_worker_mapping:
        role_worker_mapping.pop(Role.RefPolicy)
        pools.pop(Role.RefPolicy)
        return True
    if Role.ActorRolloutRef not in role_worker_mapping:
        return False
    role_worker_mapping[Role.ActorRollout] = role_worker_mapping.pop(Role.ActorRolloutRef)
    pools[Role.ActorRollout] = pools.pop(Role.ActorRolloutRef)
    return True
