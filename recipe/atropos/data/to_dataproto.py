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
# Per row (non-tensor): its index in its group, which verl's reordering of rows does not keep.
ROW_IN_GROUP = "atropos_row_in_group"
# Per row: whether `rollout_log_probs` holds the environment's inference logprobs for it.
ROLLOUT_LOG_PROBS_PRESENT = "rollout_log_probs_present"
# The environment's teacher (teacher_topk.py) under the keys verl's top-k distillation reads:
# (rows, prompt + response, k), entry j the teacher's top-k for token j + 1 (as the logits at j predict
# it); and (rows, response) 1 where a response token has the teacher's top-k (the loss counts only those).
TEACHER_IDS, TEACHER_LOGPROBS, TEACHER_TOKEN_MASK = "teacher_ids", "teacher_logprobs", "teacher_token_mask"
# Log-prob of the entries a position without teacher data (or with fewer than k) holds: exp() is 0 in
# float32, so they add nothing to the forward KL (-inf would make 0 * inf = NaN).
NO_TEACHER_LOGPROB = -1.0e4
# Per row: learnt by a supervised loss (overrides[i]["sft"] or group_overrides["sft"]), not by GRPO.
SFT_ROWS = "sft_rows"
# The environment's reference log-probs (ScoredData.ref_logprobs) at the response positions, and per row
# whether it sent them: they stand in for the reference model's pass for those rows.
ENV_REF_LOG_PROB, ENV_REF_LOG_PROB_PRESENT = "env_ref_log_prob", "env_ref_log_prob_present"


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
    with_teacher: bool = True,
    with_sft: bool = True,
    with_ref_logprobs: bool = False,
) -> DataProto:
    """Build verl's training batch from validated groups (see the module docstring for the layout).

    `rollout_log_probs` is included when any row carries `inference_logprobs`, with the per-row
    `rollout_log_probs_present`; rows without them hold zeros until `fill_missing_rollout_log_probs`
    gives them the recomputed log-probs (so verl's rollout correction leaves them alone).
    `temperature` holds each row's sampling temperature: what its group states
    (row_temperature.sampling_temperatures), else `default_temperature` (the rollout's).
    With `with_teacher`, groups that carry a teacher's top-k fill `TEACHER_*` (see there); with `with_sft`,
    `SFT_ROWS` marks the rows to learn by supervised loss when any group has them; with
    `with_ref_logprobs`, `ENV_REF_LOG_PROB[_PRESENT]` hold the environments' reference log-probs.
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

    if with_ref_logprobs:
        ref_logprobs, ref_rows = _concat_optional(groups, "ref_logprobs", np.float32)
        if ref_logprobs is not None:
            env_ref = np.zeros((n_rows, max_response_length), dtype=np.float32)
            env_ref.ravel()[response_index] = ref_logprobs[in_response]
            tensors[ENV_REF_LOG_PROB], tensors[ENV_REF_LOG_PROB_PRESENT] = torch.from_numpy(env_ref), torch.from_numpy(ref_rows)
    if with_sft and any(g.sft_rows is not None for g in groups):
        tensors[SFT_ROWS] = torch.from_numpy(np.concatenate(
            [g.sft_rows if g.sft_rows is not None else np.zeros(g.size, dtype=bool) for g in groups]))
    if with_teacher and any(g.teacher is not None for g in groups):
        shifted = in_response & (relative + max_prompt_length >= 1)  # the logits one position earlier exist
        tensors.update(_teacher_tensors(groups, shifted, row_of_token[shifted] * width + relative[shifted]
                                        + max_prompt_length - 1, response_index_of=row_of_token[shifted]
                                        * max_response_length + relative[shifted], n_rows=n_rows, width=width,
                                        max_response_length=max_response_length))

    uids = np.repeat(np.array([g.uid for g in groups], dtype=object), [g.size for g in groups])
    env_ids = np.repeat(np.array([g.env_id for g in groups], dtype=object), [g.size for g in groups])
    row_in_group = np.concatenate([np.arange(g.size) for g in groups])
    meta_info = {
        META_TRUNCATED_PROMPTS: int((prompt_lengths > max_prompt_length).sum()),
        META_TRUNCATED_RESPONSES: int((response_lengths > max_response_length).sum()),
        META_MISSING_LOGPROBS: int((~logprob_rows).sum()) if logprobs is not None else n_rows,
        META_DEFAULT_TEMPERATURE_ROWS: int(at_default.sum()),
    }
    return DataProto.from_dict(
        tensors=tensors,
        non_tensors={"uid": uids, "atropos_env_id": env_ids, ROW_IN_GROUP: row_in_group},
        meta_info=meta_info,
    )


def _teacher_tensors(groups: Sequence[ScoredGroup], shifted: np.ndarray, grid_index: np.ndarray, *,
                     response_index_of: np.ndarray, n_rows: int, width: int,
                     max_response_length: int) -> dict[str, torch.Tensor]:
    """The teacher's top-k of the batch's response tokens selected by `shifted` (flat token mask), placed at
    `grid_index` (one position before each token) of (rows, width, k); k is the largest of the groups'."""
    k = max(g.teacher.k for g in groups if g.teacher is not None)
    n_tokens = int(shifted.shape[0])
    ids = np.zeros((n_tokens, k), dtype=np.int64)
    logprobs = np.full((n_tokens, k), NO_TEACHER_LOGPROB, dtype=np.float32)
    has_teacher = np.zeros(n_tokens, dtype=bool)
    offset = 0
    for group in groups:
        if group.teacher is not None:
            completion = offset + np.flatnonzero(group.masks != PROMPT_LABEL)
            ids[completion, : group.teacher.k] = group.teacher.ids
            logprobs[completion, : group.teacher.k] = group.teacher.logprobs
            has_teacher[completion] = True
        offset += group.tokens.shape[0]
    placed = has_teacher[shifted]
    teacher_ids = np.zeros((n_rows * width, k), dtype=np.int64)
    teacher_logprobs = np.full((n_rows * width, k), NO_TEACHER_LOGPROB, dtype=np.float32)
    teacher_ids[grid_index[placed]] = ids[shifted][placed]
    teacher_logprobs[grid_index[placed]] = logprobs[shifted][placed]
    token_mask = np.zeros(n_rows * max_response_length, dtype=np.int64)
    token_mask[response_index_of[placed]] = 1
    return {
        TEACHER_IDS: torch.from_numpy(teacher_ids.reshape(n_rows, width, k)),
        TEACHER_LOGPROBS: torch.from_numpy(teacher_logprobs.reshape(n_rows, width, k)),
        TEACHER_TOKEN_MASK: torch.from_numpy(token_mask.reshape(n_rows, max_response_length)),
    }


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
