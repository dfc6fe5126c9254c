"""GRPO with token-level advantage overrides from Atropos environments.

Per group (uid): mean and unbiased std of the sequence scores of all its rows, as in verl's
`compute_grpo_outcome_advantage` (a group of one has mean 0 and std 1). Then, per row:
- `advantage_zero_mask` (the environment's `set_advantage_to_zero`): 0. The row's score still
  counts in its group's statistics; only its own normalised advantage is zeroed.
- `advantage_override_mask` with `use_advantages`: the environment's `token_level_advantages`.
- otherwise: the GRPO advantage of the row, broadcast over `response_mask`.
Rows marked `sft_rows` (learnt by the supervised loss in atropos_losses.py) are left out of their
group's statistics and get advantage 0: a mixed group's other rows get what they would alone, and a
group of only such rows has no policy-gradient term.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from verl import DataProto

from recipe.atropos.data.to_dataproto import SFT_ROWS

# algorithm.adv_estimator values this rule implements; any other would train on verl's estimator
# without the environments' advantages and zero masks, so the trainer refuses it.
SUPPORTED_ADV_ESTIMATORS = ("grpo",)
OVERRIDE_FIELDS = ("advantage_override_mask", "advantage_zero_mask", "token_level_advantages")
# meta_info key that lets the trainer switch environment advantages off per batch.
META_USE_ADVANTAGES = "atropos_use_advantages"


def check_adv_estimator(adv_estimator: object) -> None:
    """Raise ValueError naming `algorithm.adv_estimator` unless the Atropos rule implements it."""
    name = str(getattr(adv_estimator, "value", adv_estimator))
    if name not in SUPPORTED_ADV_ESTIMATORS:
        raise ValueError(
            f"algorithm.adv_estimator={name!r} is not supported by the Atropos recipe: its advantage rule is GRPO "
            f"with the environments' token-level overrides (supported: {list(SUPPORTED_ADV_ESTIMATORS)}). "
            "Set algorithm.adv_estimator=grpo."
        )


def carries_atropos_fields(data: DataProto) -> bool:
    """True when the batch came through `scored_data_to_dataproto` (it has the override fields)."""
    return all(key in data.batch.keys() for key in OVERRIDE_FIELDS)


def grpo_row_advantages(
    scores: torch.Tensor, index: np.ndarray, *, epsilon: float = 1e-6, norm_adv_by_std: bool = True
) -> torch.Tensor:
    """Per-row GRPO advantage of sequence `scores` (bs,) grouped by `index` (bs,), vectorised."""
    _, group_of_row = np.unique(index, return_inverse=True)
    group_of_row = torch.from_numpy(group_of_row.reshape(-1)).to(scores.device)
    n_groups = int(group_of_row.max()) + 1 if group_of_row.numel() else 0
    scores64 = scores.to(torch.float64)
    counts = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(
        0, group_of_row, torch.ones_like(scores64)
    )
    sums = torch.zeros_like(counts).index_add_(0, group_of_row, scores64)
    mean = sums / counts
    squared_deviation = (scores64 - mean[group_of_row]) ** 2
    variance = torch.zeros_like(counts).index_add_(0, group_of_row, squared_deviation) / (counts - 1).clamp(min=1)
    std = variance.sqrt()
    singleton = counts == 1
    mean = torch.where(singleton, torch.zeros_like(mean), mean)
    std = torch.where(singleton, torch.ones_like(std), std)
    centered = scores64 - mean[group_of_row]
    if norm_adv_by_std:
        centered = centered / (std[group_of_row] + epsilon)
    return centered.to(scores.dtype)


@dataclasses.dataclass
class AtroposGRPOComputer:
    """Sets `advantages` and `returns` on a batch from `scored_data_to_dataproto` (module docstring)."""

    epsilon: float = 1e-6
    norm_adv_by_std_in_grpo: bool = True
    use_advantages: bool = True

    def compute(self, data: DataProto) -> DataProto:
        batch = data.batch
        response_mask = batch["response_mask"]
        rewards = batch["token_level_rewards"] if "token_level_rewards" in batch.keys() else batch["token_level_scores"]
        scores = rewards.sum(dim=-1)
        sft = batch[SFT_ROWS].bool() if SFT_ROWS in batch.keys() else torch.zeros_like(scores, dtype=torch.bool)
        policy_rows = ~sft
        row_advantage = torch.zeros_like(scores)
        if policy_rows.any():
            row_advantage[policy_rows] = grpo_row_advantages(
                scores[policy_rows], data.non_tensor_batch["uid"][policy_rows.numpy()],
                epsilon=self.epsilon, norm_adv_by_std=self.norm_adv_by_std_in_grpo)
        advantages = row_advantage.unsqueeze(-1) * response_mask
        if self.use_advantages and "advantage_override_mask" in batch.keys():
            override = batch["advantage_override_mask"].bool().unsqueeze(-1)
            env_advantages = batch["token_level_advantages"].to(advantages.dtype) * response_mask
            advantages = torch.where(override, env_advantages, advantages)
        if "advantage_zero_mask" in batch.keys():
            advantages = advantages.masked_fill(batch["advantage_zero_mask"].bool().unsqueeze(-1), 0.0)
        advantages = advantages.masked_fill(sft.unsqueeze(-1), 0.0)
        batch["advantages"] = advantages
        batch["returns"] = advantages
        return data


def compute_step_advantage(data: DataProto, algorithm: Any, num_repeat: int) -> DataProto:
    """A training step's advantages. Atropos batches: this rule, called directly (it never depends on
    verl_patches having loaded in this process); any other batch (a fallback step): verl's own
    `compute_advantage` with `algorithm`'s settings."""
    norm_by_std = algorithm.get("norm_adv_by_std_in_grpo", True)
    if carries_atropos_fields(data):
        computer = AtroposGRPOComputer(norm_adv_by_std_in_grpo=norm_by_std,
                                       use_advantages=bool(data.meta_info.get(META_USE_ADVANTAGES, True)))
        return computer.compute(data)
    from verl.trainer.ppo import ray_trainer

    compute = getattr(ray_trainer.compute_advantage, "__wrapped_original__", ray_trainer.compute_advantage)
    return compute(data, adv_estimator=algorithm.adv_estimator, gamma=algorithm.gamma, lam=algorithm.lam,
                   num_repeat=num_repeat, norm_adv_by_std_in_grpo=norm_by_std, config=algorithm)
