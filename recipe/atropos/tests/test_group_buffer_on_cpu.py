"""The trainer's group buffer: exact step-sized selections, oldest first, raw JSON kept for the journal."""

import numpy as np

from recipe.atropos.atropos_integration import AtroposEnvironmentClient
from recipe.atropos.group_buffer import GroupBuffer
from recipe.atropos.tests.scored_data_factory import make_group


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
    assert [group.size for group, _ in taken] == [4, 8]
    assert [r for _, r in taken] == raw[:2]
    assert buffer.raws() == raw[2:]
    assert buffer.take_exact(12) is None and buffer.sequences == 8  # not enough: unchanged
    more, _ = batch_of([8], seed=1)
    buffer.add(more)
    # buffer [4, 4, 8]: 4 + 4 leaves no room for 8; 4 + 8 is found instead, the younger 4 stays
    taken = buffer.take_exact(12)
    assert [group.size for group, _ in taken] == [4, 8] and taken[0][1] == raw[2]
    assert buffer.raws() == [raw[3]]


def test_remove_if_drops_matching_groups():
    buffer = GroupBuffer()
    batch, _ = batch_of([4, 2, 4])
    buffer.add(batch)
    removed = buffer.remove_if(lambda group: group.size == 2)
    assert [g.size for g in removed] == [2] and buffer.sequences == 8
