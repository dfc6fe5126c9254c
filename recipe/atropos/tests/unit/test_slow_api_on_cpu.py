"""A slow link to the real run-api (SlowLink delays its answers; the server itself is real).

`/batch` pops data on the server, so a `/batch` answer slower than `timeout`, or one that comes after
the poll's `max_wait_time`, must still arrive intact: nothing the server popped is abandoned. Other
requests (which pop nothing) are retried with backoff within a bounded total wait; a server that
cannot be reached at all makes the poll (and the prefetch thread) fail cleanly, leaving no thread."""

import threading
import time

import numpy as np
import pytest

from recipe.atropos.launcher.api_process import free_loopback_port
from recipe.atropos.source.batch_prefetcher import BatchPrefetcher
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.data.errors import AtroposUnavailableError
from recipe.atropos.tests.helpers.api_helpers import GROUP, fast_client, started_trainer
from recipe.atropos.tests.helpers.scored_data_factory import make_group
from recipe.atropos.tests.helpers.slow_link import SlowLink


def posted_groups(url, seed, count=2):
    env_id = register_env(url, name=f"slow{seed}", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(seed)
    groups = [make_group(rng, group_size=GROUP, env_id=env_id, with_advantages=True) for _ in range(count)]
    post_groups(url, groups, env_id=env_id)
    return groups


def tokens_of(groups):
    return [sum(g["tokens"], []) for g in groups]


def test_batch_answer_slower_than_timeout_and_max_wait_time_arrives_intact(run_api):
    started_trainer(run_api.url)
    groups = posted_groups(run_api.url, seed=4)
    with SlowLink(run_api.port, delay=3.0) as link:
        # Every answer takes 3 s: longer than the request timeout and than the whole poll budget.
        slow = fast_client(link.url, timeout=0.5, max_wait_time=1.0, retry_attempts=3)
        batch = slow.poll_batch()
        slow.session.close()
    assert batch is not None, "the batch popped by the first /batch was abandoned"
    assert [g.tokens.tolist() for g in batch.groups] == tokens_of(groups)
    assert slow.stats.batch_requests_failed_after_send == 0
    assert fast_client(run_api.url).get_batch() is None  # popped once, and only once


def test_batch_that_forms_at_the_end_of_the_poll_is_not_lost(run_api):
    """Groups posted while the poll's last request is on the slow link: they arrive with that poll,
    or (posted too late for it) stay on the server for the next one. Either way, none is lost."""
    started_trainer(run_api.url)
    max_wait = 2.0
    with SlowLink(run_api.port, delay=1.0) as link:
        slow = fast_client(link.url, timeout=0.3, max_wait_time=max_wait)
        poster = threading.Timer(max_wait - 0.3, lambda: posted.append(posted_groups(run_api.url, seed=5)))
        posted: list = []
        poster.start()
        batch = slow.poll_batch()
        poster.join()
        if batch is None:
            batch = slow.poll_batch(max_wait_time=30.0)
        slow.session.close()
    assert batch is not None
    assert [g.tokens.tolist() for g in batch.groups] == tokens_of(posted[0])
    assert slow.stats.batch_requests_failed_after_send == 0


def test_batch_read_timeout_is_counted_as_a_possible_loss_not_retried(run_api):
    started_trainer(run_api.url)
    posted_groups(run_api.url, seed=6)
    with SlowLink(run_api.port, delay=2.0) as link:
        slow = fast_client(link.url, timeout=0.5, batch_read_timeout=0.5, max_wait_time=1.0, retry_attempts=3)
        with pytest.raises(AtroposUnavailableError, match="after it was sent"):
            slow.get_batch()
        slow.session.close()
    assert slow.stats.batch_requests_failed_after_send == 1
    assert slow.stats.retries == 0  # a request that reached the server is never sent again blindly


def test_other_requests_slower_than_timeout_are_retried_within_a_bounded_budget(run_api):
    started_trainer(run_api.url)
    with SlowLink(run_api.port, delay=2.0) as link:
        client = fast_client(link.url, timeout=0.5, retry_attempts=4, retry_delay=0.2, max_wait_time=3.0)
        started = time.monotonic()
        with pytest.raises(AtroposUnavailableError, match="after retries"):
            client.status()
        assert time.monotonic() - started >= 1.0  # at least two attempts of 0.5 s each
        assert 2 <= client.stats.retries <= 3  # retried, and stopped by the budget or the attempt count
        client.session.close()


def test_unreachable_server_fails_the_prefetch_cleanly_and_leaves_no_thread(run_api):
    threads_before = threading.active_count()
    closed_port = free_loopback_port()  # nothing listens there: connections are refused, nothing is sent
    client = fast_client(f"http://127.0.0.1:{closed_port}", retry_attempts=3, max_wait_time=1.0)
    prefetcher = BatchPrefetcher(lambda stop: client.poll_batch(stop=stop))
    for _ in range(3):  # three failed prefetch cycles
        prefetcher.start()
        with pytest.raises(AtroposUnavailableError, match="unreachable"):
            prefetcher.take()
    assert client.stats.retries >= 2 and client.stats.batch_requests_failed_after_send == 0
    prefetcher.close(timeout=5.0)
    client.session.close()
    # Each such thread is given until the deadline to end (the prefetch thread ends once close has
    # shut its executor down); one that is still running then is a thread left behind.
    deadline = time.monotonic() + 10.0
    for thread in threading.enumerate():
        if thread.name.startswith(("atropos-prefetch", "slow-link")):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    leftover = [t.name for t in threading.enumerate() if t.name.startswith(("atropos-prefetch", "slow-link"))]
    assert leftover == [] and threading.active_count() <= threads_before
