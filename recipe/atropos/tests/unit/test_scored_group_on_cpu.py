"""Validation at the boundary: every malformed group is refused with its field and group named."""

import copy

import numpy as np
import pytest

from recipe.atropos.data.errors import InvalidGroupError
from recipe.atropos.data.scored_group import TrajectoryBatch, validate_group
from recipe.atropos.tests.helpers.malformed_groups import MALFORMED, good_group, mutate
from recipe.atropos.tests.helpers.scored_data_factory import make_group


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_group_names_field_and_group(name):
    mutation, field, fragment = MALFORMED[name]
    group = mutate(mutation)
    with pytest.raises(InvalidGroupError) as info:
        validate_group(group, 4)
    err = info.value
    assert err.field == field
    assert err.group_index == 4
    assert fragment in err.reason
    assert "group 4 (env_id=1)" in str(err) and f"'{field}'" in str(err)


def test_vocab_and_length_limits():
    group = good_group()
    limit = max(max(seq) for seq in group["tokens"])
    with pytest.raises(InvalidGroupError, match=r"outside \[0, "):
        validate_group(group, 0, vocab_size=limit)
    validate_group(group, 0, vocab_size=limit + 1)
    longest = max(len(seq) for seq in group["tokens"])
    with pytest.raises(InvalidGroupError, match="more than max_token_len"):
        validate_group(group, 0, max_token_len=longest - 1)


def test_valid_group_round_trips_as_flat_arrays():
    raw = good_group()
    raw["overrides"] = [{"set_advantage_to_zero": True}, {}, None]
    group = validate_group(copy.deepcopy(raw), 0)
    assert group.size == 3
    assert [s.tolist() for s in group.split(group.tokens)] == raw["tokens"]
    assert [s.tolist() for s in group.split(group.masks)] == raw["masks"]
    np.testing.assert_allclose(np.concatenate(raw["advantages"]), group.advantages, rtol=1e-6)
    assert group.zero_advantage.tolist() == [True, False, False]
    assert group.scores.tolist() == raw["scores"]

    flat = TrajectoryBatch.from_groups([group, group], {"k": 1})
    assert flat.tokens == raw["tokens"] * 2
    assert flat.groups == [0, 0, 0, 1, 1, 1]
    assert flat.scores == raw["scores"] * 2
    assert flat.metadata == {"k": 1}


def test_group_as_base_env_sends_it_without_advantages_is_valid():
    """BaseEnv's default collect_trajectories sends [] (not null) for fields no item filled."""
    raw = make_group(np.random.default_rng(5), group_size=2)
    raw.update({"advantages": [], "inference_logprobs": [], "overrides": [], "ref_logprobs": [], "messages": [],
                "images": [], "group_overrides": {}})
    group = validate_group(raw, 0)
    assert group.advantages is None and group.inference_logprobs is None
    assert group.zero_advantage.tolist() == [False, False]


def test_partially_filled_advantages_are_invalid():
    raw = make_group(np.random.default_rng(5), group_size=3, with_advantages=True)
    raw["advantages"] = raw["advantages"][:1]
    with pytest.raises(InvalidGroupError, match="has 1 sequences, tokens has 3"):
        validate_group(raw, 0)


def test_a_prompt_longer_than_max_prompt_length_drops_its_group_by_name_on_both_paths():
    """Cutting a prompt from the left changes the context the log-probs are computed under: the
    group is dropped and counted as prompt_too_long (byte path and dict path alike), its neighbours
    kept; a prompt of exactly max_prompt_length is fine."""
    import orjson

    from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient

    long_prompt = {"tokens": [[1] * 9 + [5, 6], [1, 5]], "masks": [[-100] * 9 + [5, 6], [-100, 5]], "scores": [1.0, 0.0]}
    fits = {"tokens": [[1] * 8 + [5]], "masks": [[-100] * 8 + [5]], "scores": [1.0]}
    client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}, max_prompt_len=8)
    for batch in (client.validate_batch([fits, long_prompt]),
                  client.batch_from_payload(orjson.dumps({"batch": [fits, long_prompt]}))):
        assert len(batch.groups) == 1 and batch.groups[0].size == 1
        (bad,) = batch.invalid
        assert (bad.group_index, bad.metric_key) == (1, "prompt_too_long")
        assert "sequence 0 has a prompt of 9 tokens, more than max_prompt_length=8" in bad.message
    assert client.stats.invalid_reasons["prompt_too_long"] == 2
    allowed = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})
    assert len(allowed.validate_batch([long_prompt]).groups) == 1  # allow_prompt_truncation: kept, cut later


def test_a_response_longer_than_max_response_length_drops_its_group_by_name_on_both_paths():
    """The score judged the whole answer: cut to max_response_length, its start would be trained on the
    reward of the rest. The group is dropped as response_too_long (byte and dict path alike), naming the
    setting that keeps it; a response of exactly max_response_length, tool output inside it counted, is fine.
    With allow_response_truncation the group is kept and cut when it is converted, counted there."""
    import orjson

    from recipe.atropos.data.to_dataproto import META_TRUNCATED_RESPONSES, scored_data_to_dataproto
    from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient

    long_answer = {"tokens": [[1, 2, 5, 6, 7, 8, 9], [1, 2, 5]], "masks": [[-100, -100, 5, 6, 7, 8, 9], [-100, -100, 5]],
                   "scores": [1.0, 0.0]}
    fits = {"tokens": [[1, 5, 6, 7, 9]], "masks": [[-100, 5, -100, -100, 9]], "scores": [1.0]}  # 4 = the limit
    client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}, max_response_len=4)
    for batch in (client.validate_batch([fits, long_answer]),
                  client.batch_from_payload(orjson.dumps({"batch": [fits, long_answer]}))):
        assert len(batch.groups) == 1 and batch.groups[0].size == 1
        (bad,) = batch.invalid
        assert (bad.group_index, bad.metric_key) == (1, "response_too_long")
        assert "sequence 0 has a response of 5 tokens" in bad.message and "max_response_length=4" in bad.message
        assert "allow_response_truncation=true" in bad.message
    assert client.stats.invalid_reasons["response_too_long"] == 2
    allowed = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})
    kept = allowed.validate_batch([long_answer]).groups
    data = scored_data_to_dataproto(kept, pad_token_id=0, max_prompt_length=4, max_response_length=4)
    assert data.meta_info[META_TRUNCATED_RESPONSES] == 1
