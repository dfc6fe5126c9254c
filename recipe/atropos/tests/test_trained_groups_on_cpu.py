"""The run-time check that no group is trained twice: repeats counted by content, window bounded."""

import numpy as np

from recipe.atropos.atropos_integration import AtroposEnvironmentClient
from recipe.atropos.tests.scored_data_factory import make_group
from recipe.atropos.trained_groups import TrainedGroups


def groups(seed, count):
    rng = np.random.default_rng(seed)
    raw = [make_group(rng, group_size=4) for _ in range(count)]
    return AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}).validate_batch(raw).groups


def test_a_group_seen_again_is_counted_even_when_validated_anew():
    trained = TrainedGroups()
    first, second = groups(0, 3), groups(1, 2)
    assert trained.record(first) == 0 and trained.record(second) == 0
    again = groups(0, 3)[1:]  # the same content, validated again (new uid), as a journal replay would be
    assert trained.record(again) == 2 and trained.repeated_total == 2


def test_the_window_is_bounded():
    trained = TrainedGroups(window=4)
    batch = groups(2, 6)
    assert trained.record(batch) == 0
    assert len(trained._seen) == 4
    assert trained.record(batch[:2]) == 0  # fell out of the window
    assert trained.record(batch[-1:]) == 1
