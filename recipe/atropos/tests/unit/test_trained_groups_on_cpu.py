"""The run-time check that no group is trained twice: repeats counted by the group's identity (its
pull uid, kept through the journal), never by its content; the window is bounded."""

import numpy as np
import orjson

from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.tests.helpers.scored_data_factory import make_group
from recipe.atropos.source.trained_groups import TrainedGroups

CLIENT = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})


def groups(seed, count):
    rng = np.random.default_rng(seed)
    return CLIENT.validate_batch([make_group(rng, group_size=4) for _ in range(count)]).groups


def test_a_group_replayed_from_the_journal_is_counted_as_trained_again():
    trained = TrainedGroups()
    first = groups(0, 3)
    assert trained.record(first) == 0 and trained.record(groups(1, 2)) == 0
    journaled = [orjson.loads(orjson.dumps(g.to_scored_data(), option=orjson.OPT_SERIALIZE_NUMPY)) for g in first[1:]]
    replayed = CLIENT.validate_batch(journaled).groups  # read back as a resumed run does
    assert trained.record(replayed) == 2 and trained.repeated_total == 2


def test_equal_groups_pulled_separately_are_not_repeats():
    """A deterministic environment sends the same tokens and scores twice: two groups, both trained."""
    trained = TrainedGroups()
    assert trained.record(groups(3, 2)) == 0
    assert trained.record(groups(3, 2)) == 0 and trained.repeated_total == 0


def test_the_window_is_bounded():
    trained = TrainedGroups(window=4)
    batch = groups(2, 6)
    assert trained.record(batch) == 0
    assert trained.record(batch[:2]) == 0  # the two oldest fell out of the window
    assert trained.record(batch[-1:]) == 1
