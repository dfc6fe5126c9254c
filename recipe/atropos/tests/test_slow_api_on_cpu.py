"""A slow link to the real run-api (SlowLink delays its answers; the server itself is real): answers
later than `timeout` are retried with backoff within a bounded total wait, answers within it arrive
intact, and neither the client nor the prefetch thread leaves threads behind."""

import threading
import time

import numpy as np
import pytest

from recipe.atropos.batch_prefetcher import BatchPrefetcher
from recipe.atropos.env_api import post_groups, register_env
from recipe.atropos.errors import AtroposUnavailableError
from recipe.atropos.tests.scored_data_factory import make_group
from recipe.atropos.tests.slow_link import SlowLink
from recipe.atropos.tests.test_client_real_api_on_cpu import GROUP, fast_client, started_trainer


def test_answers_later_than_timeout_are_retried_with_backoff_within_a_bounded_wait(run_api):
    started_trainer(run_api.url)
    threads_before = threading.active_count()
    with SlowLink(run_api.port, delay=2.0) as link:
        client = fast_client(link.url, timeout=0.5, retry_attempts=4, retry_delay=0.2, max_wait_time=3.0)
        started = time.monotonic()
        with pytest.raises(AtroposUnavailableError, match="after retries"):
            client.status()
        elapsed = time.monotonic() - started
        # 4 attempts of 0.5 s plus backoff 0.2, 0.4, 0.8 (jittered) would be about 3.4 s: the 3 s budget cuts it.
        assert 2.0 <= elapsed <= 3.0 + 0.5 + 0.5, elapsed
        assert client.stats.retries >= 2

        prefetcher = BatchPrefetcher(lambda stop: client.poll_batch(stop=stop))
        for _ in range(3):  # three failed prefetch cycles
            prefetcher.start()
            started = time.monotonic()
            with pytest.raises(AtroposUnavailableError):
                prefetcher.take()
            assert time.monotonic() - started <= 3.0 + 0.5 + 0.5
        prefetcher.close(timeout=5.0)
        client.session.close()
    time.sleep(0.5)
    leftover = [t.name for t in threading.enumerate() if t.name.startswith(("atropos-prefetch", "slow-link"))]
    assert leftover == [] and threading.active_count() <= threads_before


def test_answers_within_timeout_arrive_intact(run_api):
    client = started_trainer(run_api.url)
    env_id = register_env(run_api.url, name="slow", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(4)
    groups = [make_group(rng, group_size=GROUP, env_id=env_id, with_advantages=True) for _ in range(2)]
    post_groups(run_api.url, groups, env_id=env_id)
    with SlowLink(run_api.port, delay=0.5) as link:
        slow = fast_client(link.url, timeout=3.0, max_wait_time=10.0)
        batch = slow.poll_batch()
    assert batch is not None and slow.stats.retries == 0
    assert [g.tokens.tolist() for g in batch.groups] == [sum(g["tokens"], []) for g in groups]
    assert client.stats.invalid_groups == 0
