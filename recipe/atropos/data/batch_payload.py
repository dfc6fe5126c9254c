"""A `/batch` answer decoded from its bytes straight into validated groups.

The answer is megabytes of JSON, nearly all of it numbers in the per-token lists. Decoding it into
Python objects (one per number) and then into numpy costs about twice the decode itself. simdjson
parses the bytes into its own tape and copies each per-token field into a numpy buffer in C, so no
Python object is made per token; each group then gets the same checks as the dict path
(`check_group`). A group this path cannot read exactly (a missing field, a value of the wrong type,
a row that is not a list) is converted to Python and validated the slow way, which names the field.

`as_buffer` flattens nested lists; a row holding a one-element list would read as a number. run-api
refuses such data at `/scored_data` (its ScoredData schema is `List[List[int]]`: 422), so it never
reaches `/batch`; journal replays go through the dict path, which checks every value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import simdjson

from recipe.atropos.data.errors import AtroposNotRegisteredError, AtroposProtocolError, InvalidGroupError
from recipe.atropos.data.scored_group import (
    PER_TOKEN_FLOAT_FIELDS,
    AtroposBatch,
    RaggedField,
    ScoredGroup,
    check_group,
    validate_group,
)


class _NeedsSlowPath(Exception):
    """The fast reader cannot read this group exactly; the dict path will say what is wrong."""


# Fields this reader leaves to the dict path: the teacher's [sequence][position][k] lists (as_buffer would
# flatten away their shape) and images (refused there, naming the field).
SLOW_PATH_FIELDS = ("distill_token_ids", "distill_logprobs", "images")


def _ragged(element: simdjson.Object, field: str, of_type: str, dtype: type) -> RaggedField | None:
    """A list-of-lists field as (flat values, row lengths); None when absent, null or []."""
    value = element.get(field)
    if value is None:
        return None
    if not isinstance(value, simdjson.Array):
        raise _NeedsSlowPath
    try:
        lengths = np.fromiter(map(len, value), dtype=np.int64, count=len(value))
        flat = np.frombuffer(value.as_buffer(of_type=of_type), dtype=dtype)
    except (TypeError, ValueError) as exc:  # a row that is not a list, a value of another type
        raise _NeedsSlowPath from exc
    if flat.shape[0] != int(lengths.sum()):
        raise _NeedsSlowPath
    return flat, lengths


def _python(value: Any) -> Any:
    """Small non-numeric fields (overrides, group_overrides, generation_params) as plain Python objects."""
    if isinstance(value, simdjson.Array):
        return value.as_list()
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    return value


def _read_group(element: simdjson.Object, index: int, limits: Mapping[str, int | None]) -> ScoredGroup:
    env_id = element.get("env_id")
    for field in SLOW_PATH_FIELDS:
        value = element.get(field)
        if value is not None and not (isinstance(value, simdjson.Array) and len(value) == 0):
            raise _NeedsSlowPath
    tokens = _ragged(element, "tokens", "i", np.int64)
    masks = _ragged(element, "masks", "i", np.int64)
    scores_value = element.get("scores")
    if tokens is None or masks is None or not isinstance(scores_value, simdjson.Array) or isinstance(
        env_id, (simdjson.Array, simdjson.Object)
    ):
        raise _NeedsSlowPath
    try:
        scores = np.frombuffer(scores_value.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise _NeedsSlowPath from exc
    if scores.shape[0] != len(scores_value):
        raise _NeedsSlowPath
    per_token = {}
    for field in PER_TOKEN_FLOAT_FIELDS:
        ragged = _ragged(element, field, "d", np.float64)
        per_token[field] = None if ragged is None or ragged[1].shape[0] == 0 else ragged
    overrides = _python(element.get("overrides"))
    return check_group(
        index,
        env_id,
        tokens=tokens,
        masks=masks,
        scores=scores,
        per_token=per_token,
        overrides=overrides if overrides != [] else None,
        group_overrides=_python(element.get("group_overrides")),
        generation_params=_python(element.get("generation_params")),
        messages=_python(element.get("messages")) or None,
        **limits,
    )


def _validated(groups: list, check: Any) -> list[ScoredGroup | InvalidGroupError]:
    results: list[ScoredGroup | InvalidGroupError] = []
    for index, group in enumerate(groups):
        try:
            results.append(check(group, index))
        except InvalidGroupError as exc:
            results.append(exc)
    return results


def _answer(status: Any, message: Any, results: list[ScoredGroup | InvalidGroupError] | None,
            payload_bytes: int) -> AtroposBatch | None:
    if status == "error":  # run-api's answer before /register (or after a restart lost it)
        raise AtroposNotRegisteredError(f"/batch: {message} (register again)")
    return None if results is None else AtroposBatch.from_results(results, payload_bytes=payload_bytes)


def decode_batch(payload: bytes, *, vocab_size: int | None = None, max_token_len: int | None = None,
                 max_prompt_len: int | None = None, max_response_len: int | None = None) -> AtroposBatch | None:
    """Decode and validate one `/batch` answer: its batch, or None when the server has no batch yet.
    Raises AtroposProtocolError when it is not JSON or not the API's shape (`{"batch": [...] | null,
    ...}`), AtroposNotRegisteredError when the server says it holds no registration; bad groups are
    the batch's `invalid`, not errors. The limits are those of `check_group`."""
    limits = {"vocab_size": vocab_size, "max_token_len": max_token_len, "max_prompt_len": max_prompt_len,
              "max_response_len": max_response_len}
    try:
        document = simdjson.Parser().parse(payload)
    except (ValueError, RuntimeError):  # simdjson's parse errors (RuntimeError: BIGINT_ERROR)
        # Not strict JSON for simdjson (NaN, integers beyond 64 bits): the stdlib reads those, and the
        # dict path then names the group and field.
        return _decode_python(payload, limits)
    if not isinstance(document, simdjson.Object) or "batch" not in document:
        raise AtroposProtocolError(f"/batch answered an unexpected shape: {payload[:200]!r}")
    batch = document.get("batch")
    status, message = _python(document.get("status")), _python(document.get("message"))
    if batch is None:
        return _answer(status, message, None, len(payload))
    if not isinstance(batch, simdjson.Array):
        raise AtroposProtocolError(f"/batch 'batch' must be a list or null, got {payload[:200]!r}")

    def check(element: Any, index: int) -> ScoredGroup:
        if isinstance(element, simdjson.Object):
            try:
                return _read_group(element, index, limits)
            except _NeedsSlowPath:
                pass
        return validate_group(_python(element), index, **limits)

    return _answer(status, message, _validated(list(batch), check), len(payload))


def _decode_python(payload: bytes, limits: Mapping[str, int | None]) -> AtroposBatch | None:
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise AtroposProtocolError(f"/batch answered non-JSON: {payload[:200]!r}") from exc
    if not isinstance(document, dict) or "batch" not in document:
        raise AtroposProtocolError(f"/batch answered an unexpected shape: {str(document)[:200]}")
    batch = document["batch"]
    if batch is None:
        return _answer(document.get("status"), document.get("message"), None, len(payload))
    if not isinstance(batch, list):
        raise AtroposProtocolError(f"/batch 'batch' must be a list or null, got {type(batch).__name__}")
    results = _validated(batch, lambda group, index: validate_group(group, index, **limits))
    return _answer(document.get("status"), document.get("message"), results, len(payload))
