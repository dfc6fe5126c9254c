"""Validated Atropos groups: the one place where data from `/batch` is checked.

A ScoredData group arrives as JSON lists of lists. `validate_group` turns it into flat numpy
arrays (one concatenation per field, no per-token Python loop) and checks every invariant the
conversion and the advantage rule rely on; a group that breaks one raises `InvalidGroupError`
naming the group and the field.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from recipe.atropos.data.errors import InvalidGroupError
from recipe.atropos.data.row_temperature import sampling_temperatures
from recipe.atropos.data.teacher_topk import IDS_FIELD, LOGPROBS_FIELD, TeacherTopK, read_teacher_topk

PROMPT_LABEL = -100  # Atropos masks: -100 on prompt positions, the token id on completion positions.


def _optional(raw: Mapping[str, Any], field: str) -> Any:
    """An optional per-sequence field, None when absent. BaseEnv's default `collect_trajectories`
    sends `[]` (not null) for fields no item filled, so an empty list means absent too."""
    value = raw.get(field)
    return None if value is None or (isinstance(value, list) and not value) else value


@dataclasses.dataclass(frozen=True)
class ScoredGroup:
    """One validated group: `n` sequences stored flat (`lengths` splits them)."""

    uid: str  # given when the group is pulled from `/batch`, kept through the journal
    group_index: int
    env_id: int | None
    lengths: np.ndarray  # int64 (n,)
    tokens: np.ndarray  # int64 (sum(lengths),)
    masks: np.ndarray  # int64 (sum(lengths),)
    scores: np.ndarray  # float64 (n,)
    advantages: np.ndarray | None  # float32 (sum(lengths),): per-token advantages from the environment
    inference_logprobs: np.ndarray | None  # float32 (sum(lengths),): 1.0 on prompt positions
    zero_advantage: np.ndarray  # bool (n,): overrides[i]["set_advantage_to_zero"]
    temperatures: np.ndarray  # float64 (n,): the sampling temperature the group states, NaN where silent
    overrides: list[dict] | None = None
    group_overrides: dict | None = None
    generation_params: dict | None = None
    ref_logprobs: np.ndarray | None = None  # float32 (sum(lengths),): the environment's reference log-probs
    teacher: TeacherTopK | None = None  # distill_token_ids / distill_logprobs at the completion tokens
    sft_rows: np.ndarray | None = None  # bool (n,): overrides[i]["sft"] or group_overrides["sft"]; None: none
    messages: list | None = None  # the environment's messages, one per sequence (shown in the sample table only)

    @property
    def size(self) -> int:
        return int(self.lengths.shape[0])

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-sequence views of one of the flat fields."""
        return np.split(flat, np.cumsum(self.lengths)[:-1])

    def to_scored_data(self) -> dict[str, Any]:
        """The group as a ScoredData object, rows as numpy arrays (orjson's OPT_SERIALIZE_NUMPY
        writes them as lists): what the journal stores; `validate_group` reads it back equal."""
        data: dict[str, Any] = {
            "tokens": self.split(self.tokens),
            "masks": self.split(self.masks),
            "scores": self.scores,
            "env_id": self.env_id,
            # Not a ScoredData field: how the journal tells this group from an equal one.
            "trainer_uid": self.uid,
        }
        for field in PER_TOKEN_FLOAT_FIELDS:
            values = getattr(self, field)
            if values is not None:
                data[field] = self.split(values)
        if self.teacher is not None:
            data[IDS_FIELD], data[LOGPROBS_FIELD] = self.teacher.rows(self.lengths, self.masks != PROMPT_LABEL)
        if self.overrides is not None:
            data["overrides"] = self.overrides
        for field in ("group_overrides", "generation_params", "messages"):
            if getattr(self, field) is not None:
                data[field] = getattr(self, field)
        return data


@dataclasses.dataclass(frozen=True)
class InvalidGroup:
    """A group dropped at the boundary, with the reason that names it."""

    group_index: int
    env_id: object
    field: str
    reason: str
    category: str = ""  # the `atropos/invalid/<category>` metric; the field when empty

    @property
    def metric_key(self) -> str:
        return self.category or self.field

    @property
    def message(self) -> str:
        return f"group {self.group_index} (env_id={self.env_id}): field '{self.field}': {self.reason}"


@dataclasses.dataclass
class AtroposBatch:
    """Validated groups from `/batch` (one answer, or the groups one step trains), with what was dropped."""

    groups: list[ScoredGroup]
    invalid: list[InvalidGroup]
    received_groups: int
    payload_bytes: int = 0
    wait_s: float = 0.0

    @property
    def num_sequences(self) -> int:
        return sum(group.size for group in self.groups)

    @classmethod
    def from_results(cls, results: Sequence[ScoredGroup | InvalidGroupError], *, payload_bytes: int = 0) -> AtroposBatch:
        """Valid groups kept in order; each error recorded as the InvalidGroup that names it."""
        groups = [result for result in results if isinstance(result, ScoredGroup)]
        invalid = [InvalidGroup(bad.group_index, bad.env_id, bad.field, bad.reason, bad.category)
                   for bad in results if isinstance(bad, InvalidGroupError)]
        return cls(groups, invalid, received_groups=len(results), payload_bytes=payload_bytes)

    @classmethod
    def of_step(cls, groups: list[ScoredGroup], polled: Sequence[AtroposBatch]) -> AtroposBatch:
        """The groups one step trains, with the counts of the answers they were pulled in."""
        return cls(groups, [bad for batch in polled for bad in batch.invalid],
                   received_groups=sum(batch.received_groups for batch in polled),
                   payload_bytes=sum(batch.payload_bytes for batch in polled),
                   wait_s=sum(batch.wait_s for batch in polled))

    def drop_where(self, reject: Callable[[ScoredGroup], tuple[str, str] | None]) -> None:
        """Move each group for which `reject` gives (field, reason) to `invalid`."""
        kept = []
        for group in self.groups:
            rejected = reject(group)
            if rejected is None:
                kept.append(group)
            else:
                self.invalid.append(InvalidGroup(group.group_index, group.env_id, *rejected))
        self.groups = kept

    def trajectory_batch(self) -> TrajectoryBatch:
        """The simplified API's flat view of this batch."""
        metadata = {
            "env_ids": [group.env_id for group in self.groups],
            "received_groups": self.received_groups,
            "invalid_groups": [bad.message for bad in self.invalid],
            "payload_bytes": self.payload_bytes,
            "wait_s": self.wait_s,
        }
        return TrajectoryBatch.from_groups(self.groups, metadata)


@dataclasses.dataclass
class TrajectoryBatch:
    """Flat view of an `AtroposBatch` for users of the simplified API: one entry per sequence."""

    tokens: list[list[int]]
    masks: list[list[int]]
    scores: list[float]
    groups: list[int]  # index of the group each sequence belongs to
    advantages: list[list[float] | None]
    metadata: dict[str, Any]

    @classmethod
    def from_groups(cls, groups: Sequence[ScoredGroup], metadata: dict[str, Any]) -> TrajectoryBatch:
        tokens: list[list[int]] = []
        masks: list[list[int]] = []
        scores: list[float] = []
        group_ids: list[int] = []
        advantages: list[list[float] | None] = []
        for position, group in enumerate(groups):
            tokens.extend(seq.tolist() for seq in group.split(group.tokens))
            masks.extend(seq.tolist() for seq in group.split(group.masks))
            scores.extend(group.scores.tolist())
            group_ids.extend([position] * group.size)
            if group.advantages is None:
                advantages.extend([None] * group.size)
            else:
                advantages.extend(seq.tolist() for seq in group.split(group.advantages))
        return cls(tokens, masks, scores, group_ids, advantages, metadata)


RaggedField = tuple[np.ndarray, np.ndarray]  # (flat values, per-row lengths)


def _flatten(group_index: int, env_id: object, field: str, rows: Any, dtype: type) -> RaggedField:
    """(flat values, per-row lengths) of a list of lists; raises InvalidGroupError on wrong types."""
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise InvalidGroupError(group_index, env_id, field, "must be a list of lists")
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    if dtype is np.int64:  # numpy would truncate 1.5 to 1 and read True as 1
        other = {type(value).__name__ for value in chain.from_iterable(rows) if type(value) is not int}
        if other:
            raise InvalidGroupError(group_index, env_id, field, f"holds values that are not integers ({', '.join(sorted(other))})")
    try:
        flat = np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(lengths.sum()))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidGroupError(group_index, env_id, field, f"holds a value that is not a {dtype.__name__}: {exc}") from exc
    return flat, lengths


def _check_row_lengths(group_index: int, env_id: object, field: str, lengths: np.ndarray, expected: np.ndarray) -> None:
    if lengths.shape != expected.shape:
        raise InvalidGroupError(group_index, env_id, field, f"has {lengths.shape[0]} sequences, tokens has {expected.shape[0]}")
    bad = np.flatnonzero(lengths != expected)
    if bad.size:
        i = int(bad[0])
        raise InvalidGroupError(
            group_index, env_id, field, f"{field}[{i}] has length {int(lengths[i])}, tokens[{i}] has {int(expected[i])}"
        )


def _check_finite(group_index: int, env_id: object, field: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise InvalidGroupError(group_index, env_id, field, f"holds a non-finite value ({values[bad[0]]}) at flat index {int(bad[0])}")


def _check_part_length(group_index: int, env_id: object, part: str, part_lengths: np.ndarray, limit: int | None,
                       setting: str, why: str) -> None:
    """Raise `<part>_too_long` naming the first sequence whose prompt or response is longer than `limit`."""
    if limit is None:
        return
    too_long = np.flatnonzero(part_lengths > limit)
    if too_long.size:
        i = int(too_long[0])
        measured = " (from its first completion token)" if part == "response" else ""
        raise InvalidGroupError(group_index, env_id, "masks",
                                f"sequence {i} has a {part} of {int(part_lengths[i])} tokens{measured}, more than "
                                f"{setting}={limit}: {why}", category=f"{part}_too_long")


def first_completion_positions(is_completion: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Flat index of each sequence's first completion token (the prompt is every token before it).
    Every sequence must have one (checked first), so the next one at or after its start is its own."""
    completion_positions = np.flatnonzero(is_completion)
    return completion_positions[np.searchsorted(completion_positions, starts)]


def validate_group(
    raw: Mapping[str, Any],
    group_index: int,
    *,
    vocab_size: int | None = None,
    max_token_len: int | None = None,
    max_prompt_len: int | None = None,
    max_response_len: int | None = None,
) -> ScoredGroup:
    """Check one raw ScoredData dict (decoded JSON) and return it as a ScoredGroup.

    Raises InvalidGroupError (naming the group and the field) when the group cannot be trained on.
    """
    if not isinstance(raw, Mapping):
        raise InvalidGroupError(group_index, None, "group", f"must be a JSON object, got {type(raw).__name__}")
    env_id = raw.get("env_id")
    for field in ("tokens", "masks", "scores"):
        if raw.get(field) is None:
            raise InvalidGroupError(group_index, env_id, field, "is missing")
    tokens = _flatten(group_index, env_id, "tokens", raw["tokens"], np.int64)
    masks = _flatten(group_index, env_id, "masks", raw["masks"], np.int64)
    scores_raw = raw["scores"]
    if not isinstance(scores_raw, list):
        raise InvalidGroupError(group_index, env_id, "scores", "must be a list")
    not_numbers = [value for value in scores_raw if type(value) not in (int, float)]
    if not_numbers:
        raise InvalidGroupError(group_index, env_id, "scores", f"holds a value that is not a number: {not_numbers[0]!r}")
    try:
        scores = np.asarray(scores_raw, dtype=np.float64)
    except OverflowError as exc:
        raise InvalidGroupError(group_index, env_id, "scores", f"holds a value that is not a float: {exc}") from exc
    per_token = {}
    for field in PER_TOKEN_FLOAT_FIELDS:
        rows = _optional(raw, field)
        per_token[field] = None if rows is None else _flatten(group_index, env_id, field, rows, np.float64)
    return check_group(
        group_index,
        env_id,
        tokens=tokens,
        masks=masks,
        scores=scores,
        per_token=per_token,
        overrides=_optional(raw, "overrides"),
        group_overrides=raw.get("group_overrides"),
        generation_params=raw.get("generation_params"),
        distill=(_optional(raw, IDS_FIELD), _optional(raw, LOGPROBS_FIELD)),
        images=_optional(raw, "images"),
        messages=_optional(raw, "messages"),
        vocab_size=vocab_size,
        max_token_len=max_token_len,
        max_prompt_len=max_prompt_len,
        max_response_len=max_response_len,
        uid=raw.get("trainer_uid") if isinstance(raw.get("trainer_uid"), str) else None,
    )


PER_TOKEN_FLOAT_FIELDS = ("advantages", "inference_logprobs", "ref_logprobs")


def check_group(
    group_index: int,
    env_id: object,
    *,
    tokens: RaggedField,
    masks: RaggedField,
    scores: np.ndarray,
    per_token: Mapping[str, RaggedField | None],
    overrides: Any,
    group_overrides: Any,
    generation_params: Any,
    vocab_size: int | None,
    max_token_len: int | None,
    max_prompt_len: int | None = None,
    max_response_len: int | None = None,
    uid: str | None = None,
    distill: tuple[Any, Any] = (None, None),
    images: Any = None,
    messages: Any = None,
) -> ScoredGroup:
    """Every invariant the conversion and the advantage rule rely on, on a group already read into
    flat arrays (by `validate_group` from Python objects, or by batch_payload.py from the bytes)."""
    token_ids, lengths = tokens
    n = lengths.shape[0]
    if n == 0:
        raise InvalidGroupError(group_index, env_id, "tokens", "the group is empty (no sequences)")
    if images is not None:
        raise InvalidGroupError(group_index, env_id, "images", "groups with images are not trained: this recipe has "
                                                                "no vision-language path yet", category="images")
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise InvalidGroupError(group_index, env_id, "tokens", f"tokens[{int(empty[0])}] is empty")
    if max_token_len is not None and int(lengths.max()) > max_token_len:
        i = int(np.argmax(lengths))
        raise InvalidGroupError(
            group_index, env_id, "tokens", f"tokens[{i}] has {int(lengths[i])} tokens, more than max_token_len={max_token_len}"
        )
    if token_ids.min() < 0 or (vocab_size is not None and token_ids.max() >= vocab_size):
        limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise InvalidGroupError(group_index, env_id, "tokens", f"holds a token id outside {limit}")

    mask_labels, mask_lengths = masks
    _check_row_lengths(group_index, env_id, "masks", mask_lengths, lengths)
    is_completion = mask_labels != PROMPT_LABEL
    wrong_label = np.flatnonzero(is_completion & (mask_labels != token_ids))
    if wrong_label.size:
        raise InvalidGroupError(
            group_index, env_id, "masks", f"flat index {int(wrong_label[0])} is neither -100 nor the token id"
        )
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    completions_per_sequence = np.add.reduceat(is_completion.astype(np.int64), starts)
    no_completion = np.flatnonzero(completions_per_sequence == 0)
    if no_completion.size:
        raise InvalidGroupError(group_index, env_id, "masks", f"masks[{int(no_completion[0])}] has no completion token")
    if max_prompt_len is not None or max_response_len is not None:
        prompt_lengths = first_completion_positions(is_completion, starts) - starts
        _check_part_length(group_index, env_id, "prompt", prompt_lengths, max_prompt_len, "max_prompt_length",
                           "cut, its log-probs would come from a context the policy never saw "
                           "(trainer.atropos.allow_prompt_truncation=true keeps it, cut from the left)")
        _check_part_length(group_index, env_id, "response", lengths - prompt_lengths, max_response_len,
                           "data.max_response_length",
                           "cut, the tokens trained would carry the reward of an answer they are only the start of. "
                           "Raise data.max_response_length (an environment that frames answers with the chat template "
                           "adds its end-of-turn tokens to max_tokens), or set "
                           "trainer.atropos.allow_response_truncation=true to train the cut answers")

    if scores.shape[0] != n:
        raise InvalidGroupError(group_index, env_id, "scores", f"has {scores.shape[0]} scores for {n} sequences")
    _check_finite(group_index, env_id, "scores", scores)

    checked: dict[str, np.ndarray | None] = {}
    for field in PER_TOKEN_FLOAT_FIELDS:
        ragged = per_token.get(field)
        if ragged is None:
            checked[field] = None
            continue
        values, field_lengths = ragged
        _check_row_lengths(group_index, env_id, field, field_lengths, lengths)
        _check_finite(group_index, env_id, field, values)
        checked[field] = values.astype(np.float32)

    teacher = read_teacher_topk(group_index, env_id, *distill, lengths=lengths, is_completion=is_completion,
                                vocab_size=vocab_size)

    zero_advantage = np.zeros(n, dtype=bool)
    sft_rows = np.zeros(n, dtype=bool)
    if overrides is not None:
        if not isinstance(overrides, list) or len(overrides) != n:
            raise InvalidGroupError(group_index, env_id, "overrides", f"must be a list of {n} objects (one per sequence)")
        for i, item in enumerate(overrides):
            if item is not None and not isinstance(item, dict):
                raise InvalidGroupError(group_index, env_id, "overrides", f"overrides[{i}] must be an object or null")
            zero_advantage[i] = bool(item and item.get("set_advantage_to_zero", False))
            sft_rows[i] = bool(item and item.get("sft", False))
    for field, value in (("group_overrides", group_overrides), ("generation_params", generation_params)):
        if value is not None and not isinstance(value, dict):
            raise InvalidGroupError(group_index, env_id, field, "must be an object")
    if group_overrides and group_overrides.get("sft", False):
        sft_rows[:] = True
    if not isinstance(messages, list) or len(messages) != n:
        messages = None  # shown in the sample table only: one conversation per sequence, else the decoded tokens
    temperatures = sampling_temperatures(n, overrides, generation_params, group_overrides,
                                         group_index=group_index, env_id=env_id)
    if env_id is not None and (not isinstance(env_id, int) or isinstance(env_id, bool)):
        raise InvalidGroupError(group_index, env_id, "env_id", "must be an integer")

    return ScoredGroup(
        uid=uid or uuid.uuid4().hex,
        group_index=group_index,
        env_id=env_id,
        lengths=lengths,
        tokens=token_ids,
        masks=mask_labels,
        scores=scores,
        advantages=checked["advantages"],
        inference_logprobs=checked["inference_logprobs"],
        zero_advantage=zero_advantage,
        temperatures=temperatures,
        overrides=overrides,
        group_overrides=group_overrides,
        generation_params=generation_params,
        ref_logprobs=checked["ref_logprobs"],
        teacher=teacher,
        sft_rows=sft_rows if sft_rows.any() else None,
        messages=messages,
    )
