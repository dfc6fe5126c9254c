"""AtroposBatchSource (and the simplified API's names over it) against the real `run-api`, without
Ray or a trainer: exact steps, journaled; a source reopened after a crash replays what no step
finished; nothing is lost or trained twice; with fallback off, an empty queue stops the run."""

import numpy as np
import pytest

from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.launcher.api_process import free_loopback_port
from recipe.atropos.simplified_api import SimpleAtroposClient, SimpleAtroposWorker
from recipe.atropos.source.batch_journal import RunIdentity
from recipe.atropos.source.batch_source import AtroposBatchSource, AtroposStopError, Registration
from recipe.atropos.tests.helpers.api_helpers import GROUP, fast_client, started_trainer
from recipe.atropos.tests.helpers.scored_data_factory import make_group

STEP = 2 * GROUP  # sequences per step


def posted_groups(url: str, count: int, seed: int) -> list[dict]:
    env_id = register_env(url, name="env", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(seed)
    groups = [make_group(rng, group_size=GROUP, prompt_len=(2, 6), response_len=(2, 6)) for _ in range(count)]
    post_groups(url, groups, env_id=env_id)
    return groups


def tokens_of(batch) -> list[list[list[int]]]:
    return sorted([seq.tolist() for seq in group.split(group.tokens)] for group in batch.groups)


def new_source(url: str, journal_dir, **settings) -> AtroposBatchSource:
    client = fast_client(url, max_wait_time=1.0, **settings)
    source = AtroposBatchSource(client, Registration(batch_size=STEP, max_token_len=64, num_steps=3))
    source.open(str(journal_dir), RunIdentity(project="p", experiment="e", resume_mode="auto", resumed_step=0,
                                              checkpoint_folder=None))
    return source


def test_steps_are_exact_and_journaled_a_reopened_source_replays_and_nothing_is_lost_or_repeated(run_api, tmp_path):
    url = run_api.url
    started_trainer(url, batch_size=STEP)
    posted = posted_groups(url, count=4, seed=3)
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=False)
    first, metrics = source.next_batch(1)
    assert first.num_sequences == STEP and metrics["atropos/from_atropos"] == 1.0
    assert source.journal.steps() == [1]
    source.close()  # the trainer dies before step 1 is trained

    resumed = new_source(url, tmp_path / "journal", fallback_to_grpo=False)
    replayed, metrics = resumed.next_batch(1)
    assert metrics["atropos/replayed"] == 1.0 and tokens_of(replayed) == tokens_of(first)
    resumed.step_trained(1, checkpointing=False)
    assert resumed.journal.steps() == []
    second, metrics = resumed.next_batch(2)  # registers again (the same sizes), pops the rest
    assert metrics["atropos/replayed"] == 0.0 and second.num_sequences == STEP
    resumed.step_trained(2, checkpointing=False)
    expected = sorted([seq for seq in group["tokens"]] for group in posted)
    assert sorted(tokens_of(replayed) + tokens_of(second)) == expected
    assert metrics["atropos/repeated_groups_total"] == 0.0
    with pytest.raises(AtroposStopError, match="fallback_to_grpo is false"):
        resumed.next_batch(3)
    resumed.close()


def test_without_fallback_an_unreachable_api_stops_the_run_with_a_clear_message(tmp_path):
    """Nothing listens at the URL: registration fails for max_wait_time, and the step stops instead of
    training on the local data (the trainer turns this error into a failed run,
    test_fallback_on_cpu.py, for an API that answers without batches)."""
    url = f"http://127.0.0.1:{free_loopback_port()}"
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=False, prefetch="off")
    with pytest.raises(AtroposStopError, match=r"Atropos unavailable for 1s and trainer.atropos.fallback_to_grpo "
                                               r"is false: stopping at step 1"):
        source.next_batch(1)
    assert source.journal.steps() == []  # nothing was popped, nothing is journaled
    source.close()


def test_with_fallback_on_an_empty_queue_is_a_counted_fallback_step(run_api, tmp_path):
    started_trainer(run_api.url, batch_size=STEP)
    source = new_source(run_api.url, tmp_path / "journal", fallback_to_grpo=True, prefetch="off")
    batch, metrics = source.next_batch(1)
    assert batch is None and metrics["atropos/from_atropos"] == 0.0 and metrics["atropos/fallback_steps"] == 1.0
    source.close()


def test_simple_client_returns_one_trajectory_batch_per_call(run_api):
    url = run_api.url
    client = SimpleAtroposClient(url, batch_size=STEP, max_token_len=64, retry_delay=0.05, timeout=5.0)
    assert client.trajectory_batch(max_wait_time=0.2) is None  # registered; the queue is empty
    posted = posted_groups(url, count=2, seed=5)
    batch = client.trajectory_batch(max_wait_time=5.0)
    assert batch is not None and len(batch.tokens) == STEP
    assert batch.groups == [0] * GROUP + [1] * GROUP
    by_group = {tuple(map(tuple, group["tokens"])): group["scores"] for group in posted}
    for position in range(2):
        rows = [i for i, g in enumerate(batch.groups) if g == position]
        key = tuple(tuple(batch.tokens[i]) for i in rows)
        assert [batch.scores[i] for i in rows] == by_group[key]


def test_simple_worker_is_the_batch_source_with_its_journal_open(run_api, tmp_path):
    url = run_api.url
    started_trainer(url, batch_size=STEP)
    posted = posted_groups(url, count=2, seed=7)
    worker = SimpleAtroposWorker(url, batch_size=STEP, max_token_len=64, num_steps=1, journal_dir=tmp_path / "j",
                                 retry_delay=0.05, timeout=5.0, max_wait_time=5.0)
    batch, metrics = worker.next_batch(1)
    assert tokens_of(batch) == sorted([seq for seq in group["tokens"]] for group in posted)
    assert worker.journal.steps() == [1] and metrics["atropos/from_atropos"] == 1.0
    worker.step_trained(1, checkpointing=False)
    assert worker.journal.steps() == []
    worker.close()
