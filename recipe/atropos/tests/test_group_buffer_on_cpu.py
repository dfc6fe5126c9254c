"""The trainer's group buffer: exact step-sized selections, oldest first; what it journals reads back equal."""

import numpy as np
import orjson

from recipe.atropos.atropos_integration import AtroposEnvironmentClient
from recipe.atropos.group_buffer import GroupBuffer
from recipe.atropos.tests.scored_data_factory import make_group


def tokens_of(group_data):
    return [list(map(int, row)) for row in group_data["tokens"]]


def journaled(groups):
    """ScoredData objects as the journal writes and reads them."""
    return orjson.loads(orjson.dumps(groups, option=orjson.OPT_SERIALIZE_NUMPY))


def batch_of(sizes, seed=0):
    rng = np.random.default_rng(seed)
    raw = [make_group(rng, group_size=size) for size in sizes]
    return AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}).validate_batch(raw), raw


def test_take_exact_is_fifo_skips_overshooting_groups_and_keeps_the_rest():
    buffer = GroupBuffer()
    batch, raw = batch_of([4, 8, 4, 4])
    buffer.add(batch)
    assert buffer.sequences == 20
    taken = buffer.take_exact(12)  # the oldest 4 + 8
    assert [group.size for group in taken] == [4, 8]
    assert [tokens_of(group.to_scored_data()) for group in taken] == [r["tokens"] for r in raw[:2]]
    assert [tokens_of(g) for g in journaled(buffer.scored_data())] == [r["tokens"] for r in raw[2:]]
    assert buffer.take_exact(12) is None and buffer.sequences == 8  # not enough: unchanged
    more, _ = batch_of([8], seed=1)
    buffer.add(more)
    # buffer [4, 4, 8]: 4 + 4 leaves no room for 8; 4 + 8 is found instead, the younger 4 stays
    taken = buffer.take_exact(12)
    assert [group.size for group in taken] == [4, 8] and tokens_of(taken[0].to_scored_data()) == raw[2]["tokens"]
    assert [tokens_of(g) for g in journaled(buffer.scored_data())] == [raw[3]["tokens"]]


def test_remove_if_drops_matching_groups():
    buffer = GroupBuffer()
    batch, _ = batch_of([4, 2, 4])
    buffer.add(batch)
    removed = buffer.remove_if(lambda group: group.size == 2)
    assert [g.size for g in removed] == [2] and buffer.sequences == 8


def test_journaled_group_reads_back_equal():
    """to_scored_data -> journal bytes -> validate_group gives the same arrays (float32 fields included)."""
    rng = np.random.default_rng(3)
    raw = [make_group(rng, group_size=4, with_advantages=True, with_logprobs=True, zero_rows=(1,), env_id=2),
           make_group(rng, group_size=8)]
    client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})
    batch = client.validate_batch(raw)
    again = client.validate_batch(journaled([group.to_scored_data() for group in batch.groups]))
    assert len(again.groups) == 2 and not again.invalid
    for before, after in zip(batch.groups, again.groups):
        for field in ("lengths", "tokens", "masks", "scores", "zero_advantage"):
            np.testing.assert_array_equal(getattr(before, field), getattr(after, field))
        for field in ("advantages", "inference_logprobs"):
            a, b = getattr(before, field), getattr(after, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
        assert before.env_id == after.env_id and before.overrides == after.overrides
