"""The proxy's per-sample branch (the one verl's vLLM replicas take: `n` completions are `n`
`generate` calls). vLLM cannot run here, so a small in-process replica with verl's server interface
(`generate(request_id=, prompt_ids=, sampling_params=)` returning token_ids, log_probs, stop_reason,
extra_fields) stands in for it: it samples from a generator seeded by the request's seed, and can hold
its answer until the test lets it go."""

import asyncio
import random
from types import SimpleNamespace

from recipe.atropos.policy_server.proxy import InferenceProxy


class SeededReplica:
    def __init__(self, reports_version=None):
        self.reports_version = reports_version
        self.release = None
        self.seen_seeds = []
        self.in_flight = 0
        self.cache_resets_while_busy = []  # requests decoding when clear_kv_cache came

    async def clear_kv_cache(self):
        self.cache_resets_while_busy.append(self.in_flight)

    async def generate(self, request_id, prompt_ids, sampling_params):
        seed = sampling_params.get("seed")
        self.seen_seeds.append(seed)
        rng = random.Random(seed) if seed is not None else random.Random()
        self.in_flight += 1
        if self.release is not None:
            await self.release.wait()
        self.in_flight -= 1
        tokens = [rng.randrange(1000) for _ in range(8)]
        extra = {} if self.reports_version is None else {"global_steps": self.reports_version}
        return SimpleNamespace(token_ids=tokens, log_probs=[-1.0] * 8, stop_reason="length", extra_fields=extra)


def test_a_seeded_request_gets_n_distinct_and_reproducible_samples():
    async def run():
        replica = SeededReplica()
        proxy = InferenceProxy([replica])
        first = await proxy.generate([1, 2, 3], {"seed": 7, "temperature": 1.0}, n=4)
        again = await proxy.generate([1, 2, 3], {"seed": 7, "temperature": 1.0}, n=4)
        return replica, first, again

    replica, first, again = asyncio.run(run())
    samples = [tuple(c.token_ids) for c in first]
    assert len(set(samples)) == 4  # not one sample four times: the group keeps its variance
    assert samples == [tuple(c.token_ids) for c in again]  # the seed still makes the request reproducible
    assert replica.seen_seeds[:4] == [7, 8, 9, 10]


def straddling_completion(reports_version):
    """A request in flight when the drain times out and the weights move on to version 3."""
    async def run():
        replica = SeededReplica(reports_version)
        replica.release = asyncio.Event()
        proxy = InferenceProxy([replica])
        proxy.policy_version = 2
        request = asyncio.ensure_future(proxy.generate([1, 2], {}, n=2))
        while proxy.in_flight == 0:
            await asyncio.sleep(0.001)
        assert await proxy.pause(drain_timeout=0.01) is False  # the drain timed out: the sync goes ahead
        await proxy.resume(policy_version=3)
        replica.release.set()
        return await request, proxy

    return asyncio.run(run())


def test_a_completion_that_straddles_an_update_counts_from_the_weights_it_started_on():
    """vLLM reads its version when the request ends (3 here); the first tokens came from version 2, so the
    lag (and max_policy_lag) counts from 2, and the straddle is counted."""
    completions, proxy = straddling_completion(reports_version=3)
    assert [c.policy_version for c in completions] == [2, 2]
    assert [c.newest_policy_version for c in completions] == [3, 3]
    assert proxy.registry.lookup(completions[0].token_ids) == 2
    assert proxy.stats.straddled_completions == 2 and proxy.stats.drain_timeouts == 1


def test_a_replica_without_a_report_is_tagged_with_the_span_of_the_proxys_versions():
    completions, _ = straddling_completion(reports_version=None)
    assert [(c.policy_version, c.newest_policy_version) for c in completions] == [(2, 3), (2, 3)]


def test_a_replica_that_reports_the_old_version_did_not_straddle():
    completions, proxy = straddling_completion(reports_version=2)
    assert [(c.policy_version, c.newest_policy_version) for c in completions] == [(2, 2), (2, 2)]
    assert proxy.stats.straddled_completions == 0


def test_a_request_admitted_after_the_update_is_not_a_straddle():
    async def run():
        proxy = InferenceProxy([SeededReplica(reports_version=3)])
        proxy.policy_version = 2
        await proxy.pause(drain_timeout=0.01)
        await proxy.resume(policy_version=3)
        return await proxy.generate([1, 2], {}, n=2), proxy

    completions, proxy = asyncio.run(run())
    assert [(c.policy_version, c.newest_policy_version) for c in completions] == [(3, 3), (3, 3)]
    assert proxy.stats.straddled_completions == 0


def test_after_a_drain_timeout_the_gate_reopens_once_the_straddlers_are_done_and_caches_reset():
    """vLLM's prefix cache cannot be reset while requests hold blocks: new requests would reuse prompt KV of
    the old weights. They wait until the requests in flight are done and the cache is reset."""
    async def run():
        replica = SeededReplica(reports_version=3)
        replica.release = asyncio.Event()
        proxy = InferenceProxy([replica])
        proxy.policy_version = 2
        straddler = asyncio.ensure_future(proxy.generate([1, 2], {}, n=1))
        while proxy.in_flight == 0:
            await asyncio.sleep(0.001)
        assert await proxy.pause(drain_timeout=0.01) is False
        await proxy.resume(policy_version=3)
        assert not proxy.is_open  # the straddler still decodes
        newcomer = asyncio.ensure_future(proxy.generate([1, 2], {}, n=1))
        await asyncio.sleep(0.05)
        assert not newcomer.done() and replica.cache_resets_while_busy == []
        replica.release.set()
        served = await newcomer
        await straddler
        return replica, proxy, served

    replica, proxy, served = asyncio.run(run())
    assert replica.cache_resets_while_busy == [0]  # reset once, with nothing decoding
    assert proxy.stats.cache_resets == 1 and proxy.is_open
    assert served[0].policy_version == 3 and not served[0].straddled_update


def test_the_gate_stays_closed_when_the_next_sync_closed_it_before_the_caches_were_reset():
    async def run():
        replica = SeededReplica(reports_version=3)
        replica.release = asyncio.Event()
        proxy = InferenceProxy([replica])
        straddler = asyncio.ensure_future(proxy.generate([1, 2], {}, n=1))
        while proxy.in_flight == 0:
            await asyncio.sleep(0.001)
        await proxy.pause(drain_timeout=0.01)
        await proxy.resume(policy_version=1)
        pausing = asyncio.ensure_future(proxy.pause(drain_timeout=30.0))  # the next sync, draining
        await asyncio.sleep(0.01)
        replica.release.set()
        await straddler
        assert await pausing is True
        while proxy.stats.cache_resets == 0:
            await asyncio.sleep(0.001)
        return proxy

    proxy = asyncio.run(run())
    assert not proxy.is_open  # the trainer's second sync holds it until its own resume


def test_a_request_woken_by_a_resume_that_a_pause_followed_at_once_waits_for_the_next_resume():
    """The trainer resumes and at once pauses for the next sync (back-to-back steps): a request that was
    waiting at the gate wakes after the gate closed again. It must wait again, not reach the replica
    while pause() has reported the replicas drained."""
    async def run():
        replica = SeededReplica()
        proxy = InferenceProxy([replica])
        assert await proxy.pause(drain_timeout=1.0) is True
        waiting = asyncio.ensure_future(proxy.generate([1, 2], {"seed": 7}, n=1))
        for _ in range(10):
            await asyncio.sleep(0)  # it runs up to the closed gate and waits there
        await proxy.resume(policy_version=1)
        drained = await proxy.pause(drain_timeout=1.0)  # before the waiter ran
        for _ in range(10):
            await asyncio.sleep(0)  # let the woken request run
        reached_during_update = list(replica.seen_seeds), proxy.in_flight
        await proxy.resume(policy_version=2)
        completions = await waiting
        return drained, reached_during_update, completions

    drained, (seeds_during_update, in_flight_during_update), completions = asyncio.run(run())
    assert drained is True
    assert seeds_during_update == [] and in_flight_during_update == 0
    assert completions[0].policy_version == 2
