"""AtroposBatchSource (and the simplified API's names over it) against the real `run-api`, without
Ray or a trainer: exact steps, journaled; a source reopened after a crash replays what no step
finished; nothing is lost or trained twice; with fallback off, an empty queue stops the run; a step
fed only groups it must drop ends within its budget with the drops counted; an API that never
answered stops the run instead of a silent fallback."""

import math
import threading
import time

import numpy as np
import pytest

from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.launcher.api_process import RunApiProcess, free_loopback_port
from recipe.atropos.simplified_api import SimpleAtroposClient, SimpleAtroposWorker
from recipe.atropos.source.batch_journal import RunIdentity
from recipe.atropos.source.batch_source import AtroposBatchSource, AtroposStopError, Registration
from recipe.atropos.tests.helpers.api_helpers import GROUP, fast_client, started_trainer
from recipe.atropos.tests.helpers.scored_data_factory import make_group

STEP = 2 * GROUP  # sequences per step


def posted_groups(url: str, count: int, seed: int, prompt_len: tuple[int, int] = (2, 6)) -> list[dict]:
    env_id = register_env(url, name="env", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(seed)
    groups = [make_group(rng, group_size=GROUP, prompt_len=prompt_len, response_len=(2, 6)) for _ in range(count)]
    post_groups(url, groups, env_id=env_id)
    return groups


def tokens_of(batch) -> list[list[list[int]]]:
    return sorted([seq.tolist() for seq in group.split(group.tokens)] for group in batch.groups)


def new_source(url: str, journal_dir, max_policy_lag: int | None = None, max_prompt_len: int | None = None,
               **settings) -> AtroposBatchSource:
    client = fast_client(url, **{"max_wait_time": 1.0, "max_policy_lag": max_policy_lag, **settings})
    if max_prompt_len is not None:
        client = AtroposEnvironmentClient(client.config, max_prompt_len=max_prompt_len)
    source = AtroposBatchSource(client, Registration(batch_size=STEP, max_token_len=64, num_steps=3),
                                max_policy_lag=max_policy_lag)
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


@pytest.mark.parametrize("fallback", [False, True])
def test_an_api_that_never_answered_stops_the_run_naming_its_url_with_or_without_fallback(tmp_path, fallback):
    """Nothing listens at the URL: the step waits for the API for max_wait_time, then stops the run
    naming trainer.atropos.api_url and how to start run-api, also with fallback_to_grpo on (fallback
    is for outages of an API the run has reached)."""
    url = f"http://127.0.0.1:{free_loopback_port()}"
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=fallback, prefetch="off")
    with pytest.raises(AtroposStopError, match=r"The Atropos API at http://127.0.0.1:\d+ \(trainer.atropos.api_url\) "
                                               r"has not answered since the run started") as stop:
        source.next_batch(1)
    assert "run-api" in str(stop.value) and "fallback_before_api_reached=true" in str(stop.value)
    assert source.journal.steps() == [] and source.fallback_steps == 0  # nothing popped, nothing trained
    source.close()


def test_training_without_atropos_from_the_start_takes_the_explicit_setting(tmp_path):
    url = f"http://127.0.0.1:{free_loopback_port()}"
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=True, fallback_before_api_reached=True,
                        prefetch="off")
    batch, metrics = source.next_batch(1)
    assert batch is None and metrics["atropos/fallback_steps"] == 1.0 and metrics["atropos/from_atropos"] == 0.0
    source.close()


def test_an_api_that_comes_up_within_max_wait_time_is_waited_for_not_fallen_back_from(tmp_path):
    """The run starts before run-api (fallback on, the default): its first step waits for the API and
    trains the environment's groups, no fallback step."""
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=True, prefetch="off", max_wait_time=120.0)
    failed_health = threading.Event()
    health = source.client.health

    def observed_health() -> bool:
        answered = health()
        if not answered:
            failed_health.set()
        return answered

    source.client.health = observed_health
    result: dict = {}
    step = threading.Thread(target=lambda: result.update(zip(("batch", "metrics"), source.next_batch(1))))
    step.start()
    api = RunApiProcess(port=port, log_path=tmp_path / "run-api.log")
    try:
        assert failed_health.wait(60), "the step never checked the API"
        api.start()
        for _ in range(600):  # the source registers once the API answers; then the environment can
            if source.registered:
                break
            step.join(0.1)
        assert source.registered, "the source did not register once the API answered"
        posted = posted_groups(url, count=2, seed=11)
        step.join(120)
        assert not step.is_alive()
    finally:
        source.close()
        api.stop()
    assert result["metrics"]["atropos/from_atropos"] == 1.0 and source.fallback_steps == 0
    assert tokens_of(result["batch"]) == sorted([seq for seq in group["tokens"]] for group in posted)


class DroppableFeed:
    """An environment that keeps run-api's queue stocked with groups whose prompts are 8-10 tokens
    (droppable by a 6-token limit, and of unknown policy version: no policy server served them), as
    a misconfigured environment would, for as long as it runs (bounded: 2000 groups, 120 s)."""

    def __init__(self, url: str) -> None:
        self.url, self.posted, self.stop = url, 0, threading.Event()
        self.env_id = register_env(url, name="env", weight=1.0, group_size=GROUP, max_token_length=64)
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        rng, client = np.random.default_rng(13), fast_client(self.url)
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and self.posted < 2000 and time.monotonic() < deadline:
            if client.status()["queue_size"] < 4:
                post_groups(self.url, [make_group(rng, group_size=GROUP, prompt_len=(8, 10), response_len=(2, 6))
                                       for _ in range(4)], env_id=self.env_id)
                self.posted += 4
            self.stop.wait(0.02)

    def close(self) -> bool:
        """Stop feeding; True when it was still feeding (the step did not end because the data ran out)."""
        still_feeding = self.thread.is_alive()
        self.stop.set()
        self.thread.join(30)
        return still_feeding


@pytest.mark.parametrize("drop", ["prompt_too_long", "unknown_version"])
@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("bound", ["unusable_batches", "max_wait_time"])
def test_a_step_fed_only_droppable_groups_ends_within_its_budget_with_the_drops_counted(run_api, tmp_path, drop,
                                                                                       fallback, bound):
    """An environment keeps sending only groups the step must drop (prompts over the limit; or
    versions unknown with drop_unknown_version_groups): the step's gathering ends, bounded by
    max_unusable_batches or by max_wait_time, while the data still comes (it used to pop and drop
    the queue for as long as the environment sent); it falls back or stops, and either way every
    group it popped is counted as dropped, by reason and environment."""
    started_trainer(run_api.url, batch_size=STEP)
    feed = DroppableFeed(run_api.url)
    limits = {"max_prompt_len": 6} if drop == "prompt_too_long" else {"max_policy_lag": 2,
                                                                      "drop_unknown_version_groups": True}
    bounds = ({"max_unusable_batches": 2, "max_wait_time": 600.0} if bound == "unusable_batches"
              else {"max_unusable_batches": 10_000, "max_wait_time": 3.0})
    source = new_source(run_api.url, tmp_path / "journal", fallback_to_grpo=fallback, prefetch="off", **limits, **bounds)
    reason = "invalid_prompt_too_long" if drop == "prompt_too_long" else "unknown_version"
    try:
        if fallback:
            batch, metrics = source.next_batch(1)
        else:
            with pytest.raises(AtroposStopError) as stop:
                source.next_batch(1)
    finally:
        still_feeding = feed.close()
        source.close()
    assert still_feeding, "the step ended only because the environment stopped sending"
    popped = source.client.stats.groups_received
    assert popped >= 2 * 2 and (bound != "unusable_batches" or popped == 2 * 2)  # 2 groups a batch
    if fallback:
        assert batch is None and metrics["atropos/fallback_steps"] == 1.0
        assert metrics["atropos/dropped_groups"] == popped and metrics[f"atropos/dropped_groups/{reason}"] == popped
        assert metrics[f"atropos/dropped_groups/{reason}/{feed.env_id}"] == popped
    else:
        assert f"{reason}: {popped} ({feed.env_id} {popped})" in str(stop.value)
        expected = "max_unusable_batches=2" if bound == "unusable_batches" else "max_wait_time=3s"
        assert expected in str(stop.value) and "fallback_to_grpo is false" in str(stop.value)


def test_groups_larger_than_a_step_are_dropped_and_counted_by_environment(run_api, tmp_path):
    """A group of more sequences than a step (e.g. a journal of a run with larger steps) can never be
    trained: dropped, named in the log, counted in the step's metrics by environment."""
    started_trainer(run_api.url, batch_size=STEP)
    posted = posted_groups(run_api.url, count=2, seed=17)
    source = new_source(run_api.url, tmp_path / "journal", prefetch="off", max_wait_time=5.0)
    rng = np.random.default_rng(19)
    too_large = make_group(rng, group_size=STEP + GROUP, prompt_len=(2, 6), response_len=(2, 6), env_id=3)
    source.group_buffer.add(source.client.validate_batch([too_large]), step=0)
    batch, metrics = source.next_batch(1)
    assert tokens_of(batch) == sorted([seq for seq in group["tokens"]] for group in posted)
    assert metrics["atropos/dropped_groups/oversized"] == 1 and metrics["atropos/dropped_groups/oversized/3"] == 1
    source.close()


def test_a_failed_first_batch_after_registering_is_counted_and_the_poll_goes_on(run_api, tmp_path):
    """The first `/batch` (the one registering opens the API with) answers 500: run-api popped a batch
    holding a NaN score and cannot encode it. The failure is counted and the step polls on and trains
    the next batch, with fallback off (it used to stop the run as 'unavailable')."""
    url = run_api.url
    started_trainer(url, batch_size=STEP)
    env_id = register_env(url, name="env", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(23)
    good = [make_group(rng, group_size=GROUP, prompt_len=(2, 6), response_len=(2, 6)) for _ in range(3)]
    poisoned = make_group(rng, group_size=GROUP, prompt_len=(2, 6), response_len=(2, 6))
    poisoned["scores"][0] = math.nan
    # run-api cuts the queue into batches in order and serves the newest batch first: [good0, good1] is
    # served second, [poisoned, good2] first.
    post_groups(url, [good[0], good[1], poisoned, good[2]], env_id=env_id)
    source = new_source(url, tmp_path / "journal", fallback_to_grpo=False, prefetch="off", max_wait_time=10.0)
    batch, metrics = source.next_batch(1)
    # >= 1: after the 500, the next request on the same kept-alive connection may meet its reset (counted too)
    assert source.client.stats.batch_requests_failed_after_send >= 1
    assert metrics["atropos/from_atropos"] == 1.0
    assert tokens_of(batch) == sorted([seq for seq in group["tokens"]] for group in good[:2])
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
