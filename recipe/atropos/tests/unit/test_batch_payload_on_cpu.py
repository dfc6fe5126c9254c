"""`/batch` bytes -> validated groups without Python objects per token: the same groups and the same
named errors as the dict path, for valid and for every kind of malformed group."""

import json

import numpy as np
import orjson
import pytest

from recipe.atropos.data import batch_payload
from recipe.atropos.data.batch_payload import decode_batch
from recipe.atropos.data.errors import AtroposNotRegisteredError, AtroposProtocolError
from recipe.atropos.data.scored_group import validate_group
from recipe.atropos.tests.helpers.scored_data_factory import make_group
from recipe.atropos.tests.helpers.malformed_groups import MALFORMED, good_group, mutate

ARRAY_FIELDS = ("lengths", "tokens", "masks", "scores", "advantages", "inference_logprobs", "zero_advantage",
                "temperatures")


def varied_groups(seed=0):
    rng = np.random.default_rng(seed)
    return [
        make_group(rng, group_size=4, with_advantages=True, with_logprobs=True, env_id=0),
        make_group(rng, group_size=8, zero_rows=(0, 3), env_id=1, interior_prompt_labels=True),
        {**make_group(rng, group_size=2, with_logprobs=True), "generation_params": {"temperature": 0.7, "top_p": 0.9},
         "overrides": [{"temperature": 1.3}, None]},
        {**make_group(rng, group_size=3), "advantages": [], "overrides": [], "group_overrides": {"k": [1, 2]},
         "messages": [[{"role": "user", "content": "[1, 2]"}]]},
    ]


def assert_same_group(fast, slow):
    for field in ARRAY_FIELDS:
        a, b = getattr(fast, field), getattr(slow, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert a.dtype == b.dtype, field
            np.testing.assert_array_equal(a, b, err_msg=field)
    assert (fast.group_index, fast.env_id, fast.overrides, fast.group_overrides, fast.generation_params) == (
        slow.group_index, slow.env_id, slow.overrides, slow.group_overrides, slow.generation_params)


def test_valid_groups_equal_the_dict_path_and_never_take_it(monkeypatch):
    groups = varied_groups()
    payload = orjson.dumps({"batch": groups})
    expected = [validate_group(group, index, vocab_size=1000, max_token_len=64) for index, group in enumerate(groups)]

    def refuse(*args, **kwargs):
        raise AssertionError("a valid group went through the dict path")

    monkeypatch.setattr(batch_payload, "validate_group", refuse)
    batch = decode_batch(payload, vocab_size=1000, max_token_len=64)
    assert len(batch.groups) == batch.received_groups == len(groups) and batch.invalid == []
    for fast, slow in zip(batch.groups, expected):
        assert_same_group(fast, slow)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_group_is_named_as_the_dict_path_names_it_and_the_rest_is_kept(name):
    mutation, field, fragment = MALFORMED[name]
    # NaN/Infinity are not strict JSON: those payloads take the stdlib decoder, the rest simdjson.
    payload = json.dumps({"batch": [good_group(), mutate(mutation), good_group()]}).encode()
    batch = decode_batch(payload)
    assert len(batch.invalid) == 1, name
    bad = batch.invalid[0]
    assert (bad.group_index, bad.field) == (1, field) and fragment in bad.reason
    assert [group.group_index for group in batch.groups] == [0, 2] and batch.received_groups == 3


MORE_MALFORMED = {
    "token id beyond 64 bits": (("tokens", 0, 0), 2**70, "tokens"),
    "float token id": (("tokens", 0, 0), 1.5, "tokens"),
    "row that is a number": (("masks", 1), 7, "masks"),
    "row of strings": (("advantages", 0), ["a", "b"], "advantages"),
    "boolean token id": (("masks", 0, -1), True, "masks"),
    "string score": (("scores", 1), "0.5", "scores"),
    "object instead of rows": (("inference_logprobs",), {"a": 1}, "inference_logprobs"),
    "scores not a list": (("scores",), 1.0, "scores"),
    "env_id a list": (("env_id",), [1], "env_id"),
    "group not an object": ((), [1, 2], "group"),
}


@pytest.mark.parametrize("name", list(MORE_MALFORMED))
def test_wrong_types_fall_back_to_the_dict_path_for_a_named_reason(name):
    path, value, field = MORE_MALFORMED[name]
    group = good_group()
    if path:
        target = group
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    else:
        group = value
    batch = decode_batch(json.dumps({"batch": [good_group(), group]}).encode())
    assert len(batch.invalid) == 1, (name, batch.invalid)
    bad = batch.invalid[0]
    assert bad.field == field and bad.group_index == 1, (name, bad)
    assert [group.group_index for group in batch.groups] == [0]


def test_status_fields_and_no_batch():
    assert decode_batch(b'{"batch": null}') is None
    with pytest.raises(AtroposNotRegisteredError, match="register first"):
        decode_batch(b'{"status": "error", "message": "register first", "batch": []}')


@pytest.mark.parametrize("payload", [b"<html>502</html>", b'{"groups": []}', b'{"batch": 5}', b"[1, 2]"])
def test_not_the_api_shape_is_a_protocol_error(payload):
    with pytest.raises(AtroposProtocolError):
        decode_batch(payload)
