"""The trainer's group buffer: exact step-sized selections, oldest first; what it journals reads back equal."""

import numpy as np
import orjson

from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.source.group_buffer import GroupBuffer
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def tokens_of(group_data):
    return [list(map(int, row)) for row in group_data["tokens"]]


def journaled(groups):
    """ScoredData objects as the journal writes and reads them."""
    return orjson.loads(orjson.dumps(groups, option=orjson.OPT_SERIALIZE_NUMPY))


def batch_of(sizes, seed=0):
    rng = np.random.default_rng(seed)
    raw = [make_group(rng, group_size=size) for size in sizes]
    return AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}).validate_batch(raw), raw


def uids(groups):
    return [group.uid for group in groups]


def test_take_exact_takes_exactly_the_step_prefers_the_oldest_and_loses_nothing():
    buffer = GroupBuffer()
    batch, _ = batch_of([4, 8, 4, 4])
    buffer.add(batch)
    assert buffer.sequences == 20
    taken = buffer.take_exact(12)
    assert sum(group.size for group in taken) == 12
    assert batch.groups[0].uid in uids(taken)  # the oldest group goes first when it can
    assert sorted(uids(taken) + uids(buffer.entries)) == sorted(uids(batch.groups))  # nothing lost
    left = uids(buffer.entries)
    assert [g["trainer_uid"] for g in journaled(buffer.scored_data())] == left  # what is journaled is what is left
    assert buffer.take_exact(12) is None and uids(buffer.entries) == left  # no fit: unchanged
    more, _ = batch_of([8], seed=1)
    buffer.add(more)
    taken = buffer.take_exact(12)
    assert sum(group.size for group in taken) == 12
    assert sorted(uids(taken) + uids(buffer.entries)) == sorted(left + uids(more.groups))


def test_a_group_that_never_fits_is_dropped_by_age_and_the_buffer_by_size():
    """Steps of 8 from groups of 4 and 6: a 6 fits no step until another 6 or a 2 comes. It waits
    at most max_age_steps steps, then it is dropped with its reason; the size bound drops the oldest."""
    buffer = GroupBuffer(max_age_steps=3)
    batch, _ = batch_of([6, 4, 4])
    buffer.add(batch, step=1)
    assert uids(buffer.take_exact(8)) == uids(batch.groups[1:])
    assert not buffer.can_fill(8)
    assert buffer.drop_over_bounds(step=4) == []  # waited 3 steps: still kept
    ((dropped, key, reason),) = buffer.drop_over_bounds(step=5)
    assert dropped.uid == batch.groups[0].uid and key == "buffer_age" and "max_buffer_age_steps=3" in reason
    assert len(buffer) == 0

    bounded = GroupBuffer(max_groups=2)
    many, _ = batch_of([4, 4, 4], seed=2)
    bounded.add(many, step=1)
    dropped = bounded.drop_over_bounds(step=1)
    assert [group.uid for group, _, _ in dropped] == [many.groups[0].uid] and dropped[0][1] == "buffer_size"
    assert "max_buffered_groups=2" in dropped[0][2]
    assert uids(bounded.entries) == uids(many.groups[1:])


def test_can_fill_tells_whether_an_exact_step_exists():
    buffer = GroupBuffer()
    batch, _ = batch_of([6, 6], seed=3)
    buffer.add(batch)
    assert buffer.sequences >= 8 and not buffer.can_fill(8)  # enough sequences, no exact fit: prefetch must run
    assert buffer.can_fill(12) and len(buffer) == 2  # asking changes nothing


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
