"""The actor's loss: verl's PPO loss plus the terms the environments' fields ask for.

Installed on the actor workers by the trainer (`set_loss_fn`, the hook verl's own critic uses), in
place of verl's `ppo_loss`, which it calls unchanged. Added when a batch carries them:

- Distillation (`distill_token_ids` / `distill_logprobs`): verl's top-k forward KL, KL(teacher ||
  student) over the teacher's top-k at each response token the teacher covers, computed from the
  student's logits by verl's own logits processor (`compute_topk_loss`: the engine calls this
  function with `student_logits` first) and added with `distill_loss_coef`, aggregated as the PG
  loss is (`actor.loss_agg_mode`), over the tokens that have teacher data only. The teacher never
  runs in the trainer: the environment sent its top-k.
- Supervised rows (`overrides[i]["sft"]`, `group_overrides["sft"]`): the negative log-likelihood of
  their response tokens, added with `sft_loss_coef` and aggregated the same way. Their advantage is 0
  (atropos_core_algos.py), so they add nothing to the policy-gradient term.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import torch
from verl.trainer.distillation.losses import compute_topk_loss
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.metric import Metric
from verl.workers.config.distillation import DistillationConfig, DistillationLossConfig
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from recipe.atropos.data.to_dataproto import SFT_ROWS, TEACHER_TOKEN_MASK

DISTILLATION_OUTPUTS = ("distillation_losses", "student_mass", "teacher_mass")


def topk_distillation_config() -> DistillationConfig:
    """What verl's top-k logits processor reads: forward KL on the exact log-softmax, no clamping (the
    student's log-prob of a teacher token far below the clamp would get no gradient)."""
    return DistillationConfig(enabled=False, distillation_loss=DistillationLossConfig(
        loss_mode="forward_kl_topk", use_policy_gradient=False, log_prob_min_clamp=None, loss_max_clamp=None))


@dataclasses.dataclass(frozen=True)
class AtroposLossSettings:
    distill_loss_coef: float
    sft_loss_coef: float


def _padded(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_padded_tensor(0) if tensor.is_nested else tensor


def atropos_actor_loss(config: Any, settings: AtroposLossSettings, model_output: dict | None = None,
                       data: Any = None, dp_group: Any = None, student_logits: torch.Tensor | None = None,
                       data_format: str = "thd") -> Any:
    """The engine's loss function (module docstring): with `student_logits`, the per-token top-k KL
    (verl's logits-processor call); otherwise the scalar loss and its metrics."""
    if student_logits is not None:
        return compute_topk_loss(config, topk_distillation_config(), data, student_logits, data_format)
    loss, metrics = ppo_loss(config, model_output, data, dp_group)
    if DISTILLATION_OUTPUTS[0] in model_output:
        distill_loss, distill_metrics = _distillation_term(config, model_output, data)
        loss = loss + settings.distill_loss_coef * distill_loss
        metrics["distill/loss"] = Metric(value=distill_loss, aggregation=metrics["actor/pg_loss"].aggregation)
        metrics.update(distill_metrics)
    if SFT_ROWS in data.keys() and bool(data[SFT_ROWS].any()):
        nll = _supervised_term(config, model_output, data)
        loss = loss + settings.sft_loss_coef * nll
        metrics["sft/nll"] = Metric(value=nll, aggregation=metrics["actor/pg_loss"].aggregation)
    return loss, metrics


def _supervised_term(config: Any, model_output: dict, data: Any) -> torch.Tensor:
    """Negative log-likelihood of the response tokens of the rows marked `SFT_ROWS` (at each row's
    temperature, as every log-prob of the update)."""
    log_probs = no_padding_2_padding(model_output["log_probs"], data)
    mask = _padded(data["response_mask"])[:, : log_probs.shape[1]].bool() & data[SFT_ROWS].bool().unsqueeze(-1)
    return agg_loss(loss_mat=-log_probs, loss_mask=mask, loss_agg_mode=config.loss_agg_mode, **config.global_batch_info)


def _distillation_term(config: Any, model_output: dict, data: Any) -> tuple[torch.Tensor, dict[str, float]]:
    per_token = {name: no_padding_2_padding(model_output[name], data) for name in DISTILLATION_OUTPUTS}
    width = per_token["distillation_losses"].shape[1]
    mask = (_padded(data["response_mask"])[:, :width].bool() & _padded(data[TEACHER_TOKEN_MASK])[:, :width].bool())
    # Over the teacher's top-k only, neither distribution sums to 1: the KL can dip below 0.
    losses = per_token["distillation_losses"].clamp_min(0.0)
    term = agg_loss(loss_mat=losses, loss_mask=mask, loss_agg_mode=config.loss_agg_mode, **config.global_batch_info)
    metrics = {}
    if mask.any():  # this micro-batch's teacher tokens
        metrics["distill/student_mass"] = (per_token["student_mass"][mask].float().mean()).item()
        metrics["distill/teacher_mass"] = (per_token["teacher_mass"][mask].float().mean()).item()
    return term, metrics


def install_actor_loss(actor_worker_group: Any, actor_config: Any, settings: AtroposLossSettings) -> None:
    """Make `atropos_actor_loss` the actor workers' loss (verl's `set_loss_fn`, on every rank).
    `actor_config` is the trainer's `actor_rollout_ref.actor`, made the dataclass the workers build."""
    actor_worker_group.set_loss_fn(functools.partial(atropos_actor_loss, config=omega_conf_to_dataclass(actor_config),
                                                     settings=settings))


@contextlib.contextmanager
def teacher_topk_on(actor_worker_group: Any) -> Iterator[None]:
    """While it lasts, the actor updates ask the engine for the top-k logits processor
    (`distillation_use_topk`). verl's `_update_actor` sets that flag from `distillation.enabled`, which
    would also start teacher servers; the environments sent the teacher, so the flag is added to the
    update's batch here instead."""
    update = actor_worker_group.update_actor

    def update_with_teacher(batch: Any) -> Any:
        tu.assign_non_tensor(batch, distillation_use_topk=True)
        return update(batch)

    actor_worker_group.update_actor = update_with_teacher
    try:
        yield
    finally:
        actor_worker_group.update_actor = update
