"""The background poll against the real run-api: the batch it pulls is the one posted, the caller
waits only for what is left of the poll, errors reach the caller, and closing leaves no thread."""

import threading
import time

import numpy as np
import pytest

from recipe.atropos.source.batch_prefetcher import BatchPrefetcher
from recipe.atropos.data.errors import AtroposUnavailableError
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.tests.helpers.scored_data_factory import make_group
from recipe.atropos.tests.helpers.api_helpers import GROUP, fast_client, started_trainer


def prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith("atropos-prefetch")]


def assert_no_prefetch_thread_left():
    """The executor's thread exits once its work is done: wait for that (joined, not slept on)."""
    for thread in prefetch_threads():
        thread.join(timeout=60)
    assert not prefetch_threads()


def signalled_poll(client, **poll_kwargs):
    """The prefetcher's poll function, setting `returned` once the poll has come back."""
    returned = threading.Event()

    def poll(stop):
        try:
            return client.poll_batch(stop=stop, **poll_kwargs)
        finally:
            returned.set()

    return poll, returned


class EmptyPolls:
    """Wraps `client.get_batch`: `seen` is set once the poll found the queue empty `needed` times;
    `first_call` is when the poll first asked (after the poll started, so its wait covers from there)."""

    def __init__(self, client, needed: int) -> None:
        self.seen, self.needed, self.count, self.first_call = threading.Event(), needed, 0, None
        self._get_batch = client.get_batch
        client.get_batch = self.get_batch

    def get_batch(self, *args, **kwargs):
        if self.first_call is None:
            self.first_call = time.monotonic()
        batch = self._get_batch(*args, **kwargs)
        if batch is None:
            self.count += 1
            if self.count >= self.needed:
                self.seen.set()
        return batch


def test_prefetched_batch_is_the_posted_one_and_its_wait_ran_in_the_background(run_api):
    client = started_trainer(run_api.url)
    env_id = register_env(run_api.url, name="prefetch", weight=1.0, group_size=GROUP, max_token_length=64)
    # No poll deadline within reach: the poll can only come back with the batch, however loaded the machine.
    poll, returned = signalled_poll(client, max_wait_time=3600.0)
    empty_polls = EmptyPolls(client, needed=2)
    prefetcher = BatchPrefetcher(poll)
    prefetcher.start()
    assert prefetcher.pending
    # The "training step": the queue is empty meanwhile, and the poll keeps trying it.
    assert empty_polls.seen.wait(60)
    assert not returned.is_set()
    rng = np.random.default_rng(0)
    groups = [make_group(rng, group_size=GROUP, env_id=env_id) for _ in range(2)]
    posted = time.monotonic()
    post_groups(run_api.url, groups, env_id=env_id)
    assert returned.wait(60)  # the poll finds the batch while the step still trains
    batch, waited = prefetcher.take()
    assert not prefetcher.pending
    assert [g.tokens.tolist() for g in batch.groups] == [sum(g["tokens"], []) for g in groups]
    # The poll waited through the "step"; the caller, arriving after it came back, waited less.
    assert batch.wait_s >= posted - empty_polls.first_call and waited <= batch.wait_s, (batch.wait_s, waited)
    assert prefetcher.close(timeout=5.0) is None
    assert_no_prefetch_thread_left()


def test_close_stops_a_poll_of_an_empty_queue_promptly(run_api):
    client = started_trainer(run_api.url)
    # max_wait_time far beyond the close timeout: close returns with the poll ended only if the poll
    # saw the stop event (within one poll interval), not by waiting the poll out.
    poll, returned = signalled_poll(client, max_wait_time=3600.0)
    empty_polls = EmptyPolls(client, needed=1)
    prefetcher = BatchPrefetcher(poll)
    prefetcher.start()
    assert empty_polls.seen.wait(60)  # the poll is in its loop over the empty queue
    assert prefetcher.close(timeout=120.0) is None
    assert returned.is_set()
    assert_no_prefetch_thread_left()


def test_a_failed_poll_is_raised_to_the_caller(run_api):
    client = fast_client(run_api.url, max_wait_time=1.0, retry_attempts=2)
    run_api.stop()
    prefetcher = BatchPrefetcher(lambda stop: client.poll_batch(stop=stop))
    prefetcher.start()
    with pytest.raises(AtroposUnavailableError):
        prefetcher.take()
    prefetcher.close(timeout=5.0)
