"""The fields an environment sends beyond tokens and scores, at the boundary: a teacher's top-k
(`distill_token_ids` / `distill_logprobs`) is checked against the tokens and kept for the completion
tokens, placed where verl's top-k distillation reads it (the logits before each token), and survives
the journal; `ref_logprobs` is checked like the other per-token fields; `overrides[i]["sft"]` and
`group_overrides["sft"]` mark rows; groups with `images` are refused. Dict path and byte path alike."""

import copy

import numpy as np
import orjson
import pytest

from recipe.atropos.data.errors import InvalidGroupError
from recipe.atropos.data.scored_group import validate_group
from recipe.atropos.data.to_dataproto import NO_TEACHER_LOGPROB, scored_data_to_dataproto
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.tests.helpers.api_helpers import started_trainer

PROMPT = [11, 12, 13]


def teacher_group() -> dict:
    """Two sequences: 3 prompt tokens, then 2 and 3 completion tokens; the teacher's top-2 at each
    completion token (prompt positions hold none, as vLLM gives the first one)."""
    completions = [[21, 22], [31, 32, 33]]
    return {
        "tokens": [PROMPT + c for c in completions],
        "masks": [[-100] * 3 + c for c in completions],
        "scores": [1.0, 0.0],
        "env_id": 3,
        "distill_token_ids": [[[]] * 3 + [[c, 7] for c in cs] for cs in completions],
        "distill_logprobs": [[[]] * 3 + [[-0.1, -2.5]] * len(cs) for cs in completions],
    }


def both_paths(groups: list[dict], vocab_size: int = 1000):
    client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}, vocab_size=vocab_size)
    return client.validate_batch(copy.deepcopy(groups)), client.batch_from_payload(orjson.dumps({"batch": groups}))


def with_change(field: str, change) -> dict:
    group = teacher_group()
    group[field] = change(group[field])
    return group


BAD_TEACHERS = {
    "ids without log-probs": (lambda g: {**g, "distill_logprobs": None}, "distill_logprobs", "is missing while"),
    "a sequence short of positions": (lambda g: with_change("distill_token_ids", lambda r: [r[0][:-1], r[1]]),
                                      "distill_token_ids", "distill_token_ids[0] must list the top-k of each of its 5"),
    "k differs within the group": (lambda g: with_change("distill_token_ids", lambda r: [r[0], r[1][:-1] + [[33]]]),
                                   "distill_logprobs", "holds 2 log-probs for 1 token ids"),
    "k differs in both fields": (
        lambda g: {**with_change("distill_token_ids", lambda r: [r[0], r[1][:-1] + [[33]]]),
                   "distill_logprobs": [[[]] * 3 + [[-0.1, -2.5]] * 2, [[]] * 3 + [[-0.1, -2.5]] * 2 + [[-0.1]]]},
        "distill_token_ids", "k differs within the group"),
    "an id outside the vocabulary": (lambda g: with_change("distill_token_ids", lambda r: [r[0][:3] + [[21, 5000]] + r[0][4:], r[1]]),
                                     "distill_token_ids", "outside [0, 1000)"),
    "a positive log-prob": (lambda g: with_change("distill_logprobs", lambda r: [r[0][:3] + [[0.5, -1.0]] + r[0][4:], r[1]]),
                            "distill_logprobs", "not a log-probability"),
    "a float id": (lambda g: with_change("distill_token_ids", lambda r: [r[0][:3] + [[21.0, 7]] + r[0][4:], r[1]]),
                   "distill_token_ids", "not integers"),
    "no entry at a completion token": (lambda g: with_change("distill_token_ids", lambda r: [r[0][:3] + [[]] + r[0][4:], r[1]]),
                                       "distill_logprobs", "holds 2 log-probs for 0 token ids"),
    "ref_logprobs of another length": (lambda g: {**g, "ref_logprobs": [[0.0] * 5, [0.0] * 5]}, "ref_logprobs",
                                       "ref_logprobs[1] has length 5"),
}


@pytest.mark.parametrize("name", list(BAD_TEACHERS))
def test_a_group_whose_teacher_disagrees_is_dropped_naming_the_field(name):
    change, field, fragment = BAD_TEACHERS[name]
    bad = change(teacher_group())
    for batch in both_paths([teacher_group(), bad]):
        assert len(batch.groups) == 1  # its neighbour is kept
        (invalid,) = batch.invalid
        assert (invalid.group_index, invalid.field) == (1, field) and fragment in invalid.reason, invalid.message


def test_images_are_refused_with_their_own_reason(run_api):
    for batch in both_paths([{**teacher_group(), "images": ["data:image/png;base64,AAAA"]}]):
        (invalid,) = batch.invalid
        assert invalid.metric_key == "images" and "no vision-language path" in invalid.reason
    # Through the real run-api: the group with images is dropped, the one beside it trained.
    client = started_trainer(run_api.url, batch_size=4)
    env_id = register_env(run_api.url, name="vision", weight=1.0, group_size=2, max_token_length=64)
    post_groups(run_api.url, [{**teacher_group(), "images": ["data:image/png;base64,AAAA"]}, teacher_group()],
                env_id=env_id)
    batch = client.poll_batch()
    assert batch is not None and len(batch.groups) == 1 and [bad.metric_key for bad in batch.invalid] == ["images"]
    assert client.stats.invalid_reasons["images"] == 1


def test_the_teacher_is_kept_for_completion_tokens_and_survives_the_journal():
    dict_batch, byte_batch = both_paths([teacher_group()])
    for group in (dict_batch.groups[0], byte_batch.groups[0]):
        assert group.teacher.k == 2
        assert group.teacher.ids[:, 0].tolist() == [21, 22, 31, 32, 33]
        assert np.allclose(group.teacher.logprobs, [[-0.1, -2.5]] * 5)
    journaled = orjson.loads(orjson.dumps(dict_batch.groups[0].to_scored_data(), option=orjson.OPT_SERIALIZE_NUMPY))
    again = validate_group(journaled, 0)
    assert np.array_equal(again.teacher.ids, dict_batch.groups[0].teacher.ids)
    assert np.array_equal(again.teacher.logprobs, dict_batch.groups[0].teacher.logprobs)


def test_the_teacher_sits_where_verl_reads_it_and_mixed_batches_pad_the_rest():
    plain = {"tokens": [PROMPT + [41, 42, 43]], "masks": [[-100] * 3 + [41, 42, 43]], "scores": [0.5], "env_id": 4}
    groups = [validate_group(teacher_group(), 0), validate_group(plain, 1)]
    data = scored_data_to_dataproto(groups, pad_token_id=0, max_prompt_length=4, max_response_length=4).batch
    input_ids, ids, logprobs = data["input_ids"], data["teacher_ids"], data["teacher_logprobs"]
    assert ids.shape == (3, 8, 2)
    for row in range(3):
        for column in range(1, 8):
            covered = bool(data["teacher_token_mask"][row, column - 4]) if column >= 4 else False
            if covered:  # the logits at column - 1 predict the token at column: the teacher's entry sits there
                assert ids[row, column - 1, 0] == input_ids[row, column]
                assert logprobs[row, column - 1].tolist() == pytest.approx([-0.1, -2.5])
    assert data["teacher_token_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert (logprobs[2] == NO_TEACHER_LOGPROB).all()  # the plain group's row: no mass anywhere
    off = scored_data_to_dataproto(groups, pad_token_id=0, max_prompt_length=4, max_response_length=4, with_teacher=False)
    assert "teacher_ids" not in off.batch.keys()


def test_sft_rows_come_from_overrides_or_the_group():
    per_row = validate_group({**teacher_group(), "overrides": [{"sft": True}, {}]}, 0)
    assert per_row.sft_rows.tolist() == [True, False]
    whole = validate_group({**teacher_group(), "group_overrides": {"sft": True}}, 0)
    assert whole.sft_rows.tolist() == [True, True]
    assert validate_group(teacher_group(), 0).sft_rows is None


def test_a_prompt_position_may_hold_any_count_but_a_completion_token_needs_k():
    group = teacher_group()
    group["distill_token_ids"][0][1] = [5, 6, 7, 8]  # a prompt position with top-4
    group["distill_logprobs"][0][1] = [-1.0] * 4
    for batch in both_paths([group]):
        assert batch.groups[0].teacher.k == 2
    with pytest.raises(InvalidGroupError, match="first completion token holds no entry"):
        validate_group(with_change("distill_logprobs", lambda r: r) | {
            "distill_token_ids": [[[]] * 5, [[]] * 6], "distill_logprobs": [[[]] * 5, [[]] * 6]}, 0)
