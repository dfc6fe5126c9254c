"""Validated Atropos groups -> verl `DataProto`, vectorised over all tokens of the batch.

Layout per sequence: the prompt is every token before the first completion position
(mask != -100); it is left-padded (and truncated from the left) to `max_prompt_length`. The
response is the rest, right-padded (and truncated) to `max_response_length`. Response positions
whose mask is -100 (e.g. tool output inside a multi-turn completion) stay in the response but
get `response_mask` 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from recipe.atropos.data.row_temperature import TEMPERATURE
from recipe.atropos.data.scored_group import PROMPT_LABEL, ScoredGroup, first_completion_positions

# meta_info keys the conversion writes (read by the trainer's metrics).
META_TRUNCATED_PROMPTS = "atropos_truncated_prompts"
META_TRUNCATED_RESPONSES = "atropos_truncated_responses"
META_MISSING_LOGPROBS = "atropos_rows_without_inference_logprobs"
META_DEFAULT_TEMPERATURE_ROWS = "atropos_rows_at_default_temperature"
# Per row: whether `rollout_log_probs` holds the environment's inference logprobs for it.
ROLLOUT_LOG_PROBS_PRESENT = "rollout_log_probs_present"


def _concat_optional(groups: Sequence[ScoredGroup], field: str, dtype: type) -> tuple[np.ndarray | None, np.ndarray]:
    """Flat concatenation of a per-token field (zeros for groups without it) and a per-row presence mask."""
    present = np.concatenate([np.full(g.size, getattr(g, field) is not None) for g in groups])
    if not present.any():
        return None, present
    parts = [getattr(g, field) if getattr(g, field) is not None else np.zeros(g.tokens.shape[0], dtype) for g in groups]
    return np.concatenate(parts).astype(dtype, copy=False), present


def scored_data_to_dataproto(
    groups: Sequence[ScoredGroup],
    *,
    pad_token_id: int,
    max_prompt_length: int,
    max_response_length: int,
    default_temperature: float = 1.0,
) -> DataProto:
    """Build verl's training batch from validated groups (see the module docstring for the layout).

    `rollout_log_probs` is included when any row carries `inference_logprobs`, with the per-row
    `rollout_log_probs_present`; rows without them hold zeros until `fill_missing_rollout_log_probs`
    gives them the recomputed log-probs (so verl's rollout correction leaves them alone).
    `temperature` holds each row's sampling temperature: what its group states
    (row_temperature.sampling_temperatures), else `default_temperature` (the rollout's).
    """
    if not groups:
        raise ValueError("scored_data_to_dataproto needs at least one group")
    if max_prompt_length < 0 or max_response_length < 1:
        raise ValueError(f"bad lengths: max_prompt_length={max_prompt_length}, max_response_length={max_response_length}")

    lengths = np.concatenate([g.lengths for g in groups])
    tokens = np.concatenate([g.tokens for g in groups])
    masks = np.concatenate([g.masks for g in groups])
    scores = np.concatenate([g.scores for g in groups]).astype(np.float32)
    zero_rows = np.concatenate([g.zero_advantage for g in groups])
    advantages, override_rows = _concat_optional(groups, "advantages", np.float32)
    logprobs, logprob_rows = _concat_optional(groups, "inference_logprobs", np.float32)
    stated_temperatures = np.concatenate([g.temperatures for g in groups])
    at_default = np.isnan(stated_temperatures)
    temperatures = np.where(at_default, default_temperature, stated_temperatures).astype(np.float32)

    n_rows = lengths.shape[0]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    row_of_token = np.repeat(np.arange(n_rows), lengths)
    is_completion = masks != PROMPT_LABEL
    response_start = first_completion_positions(is_completion, starts)
    prompt_lengths = response_start - starts
    response_lengths = lengths - prompt_lengths
    # Position of each token relative to its row's response start: negative inside the prompt.
    relative = np.arange(tokens.shape[0]) - np.repeat(response_start, lengths)

    # Scatter through flat indices into the (rows, prompt + response) grid: one index array per
    # region instead of (row, column) pairs per field.
    width = max_prompt_length + max_response_length
    in_prompt = (relative < 0) & (relative >= -max_prompt_length)
    in_response = (relative >= 0) & (relative < max_response_length)
    kept = in_prompt | in_response
    grid_index = row_of_token[kept] * width + (relative[kept] + max_prompt_length)
    response_index = row_of_token[in_response] * max_response_length + relative[in_response]

    input_ids = np.full((n_rows, width), pad_token_id, dtype=np.int64)
    input_ids.ravel()[grid_index] = tokens[kept]
    attention = np.zeros((n_rows, width), dtype=np.int64)
    attention.ravel()[grid_index] = 1
    response_mask = np.zeros((n_rows, max_response_length), dtype=np.int64)
    response_mask.ravel()[response_index] = is_completion[in_response]

    kept_response = np.minimum(response_lengths, max_response_length)
    token_level_scores = np.zeros((n_rows, max_response_length), dtype=np.float32)
    token_level_scores[np.arange(n_rows), kept_response - 1] = scores

    token_level_advantages = np.zeros((n_rows, max_response_length), dtype=np.float32)
    if advantages is not None:
        token_level_advantages.ravel()[response_index] = advantages[in_response]

    attention_mask = torch.from_numpy(attention)
    tensors = {
        "prompts": torch.from_numpy(np.ascontiguousarray(input_ids[:, :max_prompt_length])),
        "responses": torch.from_numpy(np.ascontiguousarray(input_ids[:, max_prompt_length:])),
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
        "response_mask": torch.from_numpy(response_mask),
        "token_level_scores": torch.from_numpy(token_level_scores),
        "token_level_advantages": torch.from_numpy(token_level_advantages),
        "advantage_override_mask": torch.from_numpy(override_rows),
        "advantage_zero_mask": torch.from_numpy(zero_rows),
        TEMPERATURE: torch.from_numpy(temperatures),
    }
    if logprobs is not None:
        tensors[ROLLOUT_LOG_PROBS_PRESENT] = torch.from_numpy(logprob_rows)
        rollout_log_probs = np.zeros((n_rows, max_response_length), dtype=np.float32)
        rollout_log_probs.ravel()[response_index] = logprobs[in_response]
        tensors["rollout_log_probs"] = torch.from_numpy(rollout_log_probs)

    uids = np.repeat(np.array([g.uid for g in groups], dtype=object), [g.size for g in groups])
    env_ids = np.repeat(np.array([g.env_id for g in groups], dtype=object), [g.size for g in groups])
    meta_info = {
        META_TRUNCATED_PROMPTS: int((prompt_lengths > max_prompt_length).sum()),
        META_TRUNCATED_RESPONSES: int((response_lengths > max_response_length).sum()),
        META_MISSING_LOGPROBS: int((~logprob_rows).sum()) if logprobs is not None else n_rows,
        META_DEFAULT_TEMPERATURE_ROWS: int(at_default.sum()),
    }
    return DataProto.from_dict(
        tensors=tensors,
        non_tensors={"uid": uids, "atropos_env_id": env_ids},
        meta_info=meta_info,
    )


def fill_missing_rollout_log_probs(data: DataProto) -> None:
    """Once `old_log_probs` are computed: rows without inference logprobs take them as their
    `rollout_log_probs` (importance ratio 1, never rejected), so verl's rollout correction corrects
    exactly the rows that have the sampler's logprobs. No-op for batches without the field."""
    batch = data.batch
    if ROLLOUT_LOG_PROBS_PRESENT not in batch.keys() or "old_log_probs" not in batch.keys():
        return
    missing = ~batch[ROLLOUT_LOG_PROBS_PRESENT].bool()
    if missing.any():
        rollout = batch["rollout_log_probs"]
        batch["rollout_log_probs"] = torch.where(missing.unsqueeze(-1), batch["old_log_probs"].to(rollout.dtype), rollout)
