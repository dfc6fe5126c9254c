"""`atropos/*` metrics of one trained Atropos batch (logged through verl's Tracking)."""

from __future__ import annotations

import collections
import json
import logging

import numpy as np
from verl import DataProto

from recipe.atropos.data.to_dataproto import (
    META_DEFAULT_TEMPERATURE_ROWS,
    META_MISSING_LOGPROBS,
    META_TRUNCATED_PROMPTS,
    META_TRUNCATED_RESPONSES,
    ROLLOUT_LOG_PROBS_PRESENT,
    SFT_ROWS,
    TEACHER_TOKEN_MASK,
)
from recipe.atropos.data.sampling_params import truncating_parameters
from recipe.atropos.data.scored_group import AtroposBatch

logger = logging.getLogger(__name__)


def load_env_names(path: str | None) -> dict[int, str]:
    """env_id -> name from the launcher's names file; {} when unset, missing or unreadable."""
    if not path:
        return {}
    try:
        with open(path) as handle:
            return {int(env_id): str(name) for env_id, name in json.load(handle).items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as exc:
        logger.warning("cannot read environment names from %s: %s", path, exc)
        return {}


def atropos_batch_metrics(batch: AtroposBatch, data: DataProto, env_names: dict[int, str] | None = None) -> dict[str, float]:
    groups = batch.groups
    scores = np.concatenate([g.scores for g in groups])
    identical = [bool(np.all(g.scores == g.scores[0])) for g in groups]
    rows = data.batch["response_mask"].shape[0]
    metrics: dict[str, float] = {
        "atropos/batch_groups": float(len(groups)),
        "atropos/total_sequences": float(rows),
        "atropos/mean_score": float(scores.mean()),
        "atropos/identical_score_rate": float(np.mean(identical)),
        "atropos/override_fraction": float(data.batch["advantage_override_mask"].float().mean()),
        "atropos/zeroed_fraction": float(data.batch["advantage_zero_mask"].float().mean()),
        "atropos/invalid_groups": float(len(batch.invalid)),
        "atropos/poll_wait_s": float(batch.wait_s),
        "atropos/avg_response_length": float(data.batch["response_mask"].sum(-1).float().mean()),
        "atropos/truncated_prompts": float(data.meta_info.get(META_TRUNCATED_PROMPTS, 0)),
        "atropos/truncated_responses": float(data.meta_info.get(META_TRUNCATED_RESPONSES, 0)),
        "atropos/payload_mb": batch.payload_bytes / 1e6,
        # Rows without inference_logprobs: verl's rollout correction does not apply to them.
        "atropos/rows_without_logprobs": float(data.meta_info.get(META_MISSING_LOGPROBS, rows)),
        # The temperature each row's log-probs are recomputed at (row_temperature.py); rows whose
        # group did not state one take actor_rollout_ref.rollout.temperature.
        "atropos/sampling_temperature_min": float(data.batch["temperature"].min()),
        "atropos/sampling_temperature_max": float(data.batch["temperature"].max()),
        "atropos/rows_at_default_temperature": float(data.meta_info.get(META_DEFAULT_TEMPERATURE_ROWS, rows)),
        # Rows whose group sent a teacher's top-k (distilled unless trainer.atropos.distill_loss_coef=0),
        # and the response tokens that carry it into the distillation loss.
        "atropos/distill_rows": float(sum(g.size for g in groups if g.teacher is not None)),
        "atropos/distill_tokens": float(data.batch[TEACHER_TOKEN_MASK].sum()) if TEACHER_TOKEN_MASK in data.batch.keys()
        else 0.0,
        # Rows learnt by the supervised loss instead of GRPO (overrides sft; 0 with sft_loss_coef=0).
        "atropos/sft_rows": float(data.batch[SFT_ROWS].sum()) if SFT_ROWS in data.batch.keys() else 0.0,
        # Rows sampled with top_p / top_k / min_p, which the log-prob recomputation does not apply.
        "atropos/rows_with_truncated_sampling": float(sum(truncating_parameters(g)[1] for g in groups)),
    }
    for field, count in collections.Counter(bad.metric_key for bad in batch.invalid).items():
        metrics[f"atropos/invalid/{field}"] = float(count)
    # By name: a restarted environment registers under a new env_id with the same name.
    sequences_per_env: collections.Counter = collections.Counter()
    groups_per_env: collections.Counter = collections.Counter()
    score_sum_per_env: collections.Counter = collections.Counter()
    identical_per_env: collections.Counter = collections.Counter()
    for g, same in zip(groups, identical):
        name = (env_names or {}).get(g.env_id, str(g.env_id))
        sequences_per_env[name] += g.size
        groups_per_env[name] += 1
        score_sum_per_env[name] += float(np.sum(g.scores))
        identical_per_env[name] += same
    for name, count in sequences_per_env.items():
        metrics[f"atropos/env_share/{name}"] = count / rows
        # summed over steps by the launcher, which warns about environments that send nothing
        metrics[f"atropos/env_groups/{name}"] = float(groups_per_env[name])
        metrics[f"atropos/env_mean_score/{name}"] = score_sum_per_env[name] / count  # the training reward per environment
        # groups whose answers all scored the same: GRPO gives them no signal
        metrics[f"atropos/env_identical_score_rate/{name}"] = identical_per_env[name] / groups_per_env[name]
    return metrics


def rollout_logprob_gap(data: DataProto) -> dict[str, float]:
    """|old_log_probs - rollout_log_probs| over the completion tokens of rows that carry the sampler's
    logprobs: numerical noise when the data is on-policy and recomputed at its sampling temperature,
    larger with policy lag. {} when no row carries them."""
    batch = data.batch
    if ROLLOUT_LOG_PROBS_PRESENT not in batch.keys() or "old_log_probs" not in batch.keys():
        return {}
    tokens = batch["response_mask"].bool() & batch[ROLLOUT_LOG_PROBS_PRESENT].bool().unsqueeze(-1)
    if not tokens.any():
        return {}
    gap = (batch["old_log_probs"].float() - batch["rollout_log_probs"].float()).abs()[tokens]
    return {"atropos/rollout_logprob_gap_max": float(gap.max()), "atropos/rollout_logprob_gap_mean": float(gap.mean())}
