"""An environment's teacher, as a group sends it: ScoredData's `distill_token_ids` and `distill_logprobs`,
[sequence][position][k], the teacher's top-k token ids and their log-probs at every position.

Entry i of a sequence is the teacher's distribution for that sequence's token i, given the tokens
before it (what atroposlib's `get_logprobs` returns as prompt log-probs over prompt + completion).
Only completion positions (mask != -100) are trained on, so only those are checked and kept: each
holds the same k >= 1 within a group, ids inside the vocabulary, finite log-probs that are at most 0.
Prompt positions only need the right types (vLLM gives the first position none).
"""

from __future__ import annotations

import dataclasses
from itertools import chain
from typing import Any

import numpy as np

from recipe.atropos.data.errors import InvalidGroupError

IDS_FIELD, LOGPROBS_FIELD = "distill_token_ids", "distill_logprobs"
LOGPROB_SLACK = 1e-3  # rounding above 0 that a log-probability may show


@dataclasses.dataclass(frozen=True)
class TeacherTopK:
    """The teacher's top-k at each completion token of a group, in the order of the group's flat tokens."""

    ids: np.ndarray  # int64 (completion tokens, k)
    logprobs: np.ndarray  # float32 (completion tokens, k)

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def rows(self, lengths: np.ndarray, is_completion: np.ndarray) -> tuple[list, list]:
        """Back to ScoredData's [sequence][position][k] lists (prompt positions empty): what the
        journal stores; `read_teacher_topk` reads it back equal."""
        ids: list[list] = [[] for _ in range(int(is_completion.shape[0]))]
        logprobs: list[list] = [[] for _ in range(int(is_completion.shape[0]))]
        for position, row_ids, row_logprobs in zip(np.flatnonzero(is_completion).tolist(), self.ids.tolist(),
                                                   self.logprobs.tolist(), strict=True):
            ids[position], logprobs[position] = row_ids, row_logprobs
        bounds = [0, *np.cumsum(lengths).tolist()]
        return ([ids[a:b] for a, b in zip(bounds, bounds[1:])], [logprobs[a:b] for a, b in zip(bounds, bounds[1:])])


def _positions(group_index: int, env_id: object, field: str, rows: Any, lengths: np.ndarray) -> list:
    """Every position's list of one field, flattened over sequences, after checking each sequence has one
    position per token."""
    if not isinstance(rows, list) or len(rows) != lengths.shape[0]:
        raise InvalidGroupError(group_index, env_id, field, f"must be a list of {lengths.shape[0]} sequences "
                                                            f"(one per row of tokens)")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != int(lengths[i]):
            got = f"{len(row)} positions" if isinstance(row, list) else type(row).__name__
            raise InvalidGroupError(group_index, env_id, field,
                                    f"{field}[{i}] must list the top-k of each of its {int(lengths[i])} tokens, got {got}")
    positions = list(chain.from_iterable(rows))
    if not all(isinstance(position, list) for position in positions):
        raise InvalidGroupError(group_index, env_id, field, "each position must be a list of the teacher's top-k")
    return positions


def _values(group_index: int, env_id: object, field: str, positions: list, integers: bool) -> tuple[np.ndarray, np.ndarray]:
    counts = np.fromiter(map(len, positions), dtype=np.int64, count=len(positions))
    values = list(chain.from_iterable(positions))
    if integers:
        wrong = {type(value).__name__ for value in values if type(value) is not int}
    else:
        wrong = {type(value).__name__ for value in values if type(value) not in (int, float)}
    if wrong:
        kind = "integers" if integers else "numbers"
        raise InvalidGroupError(group_index, env_id, field, f"holds values that are not {kind} ({', '.join(sorted(wrong))})")
    try:
        flat = np.asarray(values, dtype=np.int64 if integers else np.float64)
    except OverflowError as exc:
        raise InvalidGroupError(group_index, env_id, field, f"holds a value out of range: {exc}") from exc
    return flat, counts


def read_teacher_topk(group_index: int, env_id: object, ids_rows: Any, logprob_rows: Any, *, lengths: np.ndarray,
                      is_completion: np.ndarray, vocab_size: int | None) -> TeacherTopK | None:
    """The group's teacher top-k (None when it sends neither field); raises InvalidGroupError naming the
    field when the two disagree with each other or with the tokens (see the module docstring)."""
    if ids_rows is None and logprob_rows is None:
        return None
    if ids_rows is None or logprob_rows is None:
        missing, given = (IDS_FIELD, LOGPROBS_FIELD) if ids_rows is None else (LOGPROBS_FIELD, IDS_FIELD)
        raise InvalidGroupError(group_index, env_id, missing, f"is missing while {given} is given (both or neither)")
    ids, id_counts = _values(group_index, env_id, IDS_FIELD,
                             _positions(group_index, env_id, IDS_FIELD, ids_rows, lengths), integers=True)
    logprobs, logprob_counts = _values(group_index, env_id, LOGPROBS_FIELD,
                                       _positions(group_index, env_id, LOGPROBS_FIELD, logprob_rows, lengths),
                                       integers=False)
    mismatch = np.flatnonzero(id_counts != logprob_counts)
    if mismatch.size:
        i = int(mismatch[0])
        raise InvalidGroupError(group_index, env_id, LOGPROBS_FIELD, f"flat position {i} holds {int(logprob_counts[i])} "
                                                                     f"log-probs for {int(id_counts[i])} token ids")
    completion_counts = id_counts[is_completion]
    k = int(completion_counts[0])
    if k < 1:
        raise InvalidGroupError(group_index, env_id, IDS_FIELD, "the first completion token holds no entry (k >= 1)")
    uneven = np.flatnonzero(completion_counts != k)
    if uneven.size:
        j = int(uneven[0])
        raise InvalidGroupError(group_index, env_id, IDS_FIELD, f"k differs within the group: the first completion "
                                                                f"token holds {k}, completion token {j} holds "
                                                                f"{int(completion_counts[j])}")
    starts = np.concatenate(([0], np.cumsum(id_counts)[:-1]))[is_completion]
    gather = starts[:, None] + np.arange(k)
    kept_ids, kept_logprobs = ids[gather], logprobs[gather]
    if kept_ids.min() < 0 or (vocab_size is not None and kept_ids.max() >= vocab_size):
        limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise InvalidGroupError(group_index, env_id, IDS_FIELD, f"holds a token id outside {limit}")
    bad = np.flatnonzero(~np.isfinite(kept_logprobs) | (kept_logprobs > LOGPROB_SLACK))
    if bad.size:
        value = kept_logprobs.ravel()[bad[0]]
        raise InvalidGroupError(group_index, env_id, LOGPROBS_FIELD, f"holds {value}, not a log-probability (finite, "
                                                                     f"at most 0), at a completion token")
    return TeacherTopK(kept_ids, kept_logprobs.astype(np.float32))
