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

    async def generate(self, request_id, prompt_ids, sampling_params):
        seed = sampling_params.get("seed")
        self.seen_seeds.append(seed)
        rng = random.Random(seed) if seed is not None else random.Random()
        if self.release is not None:
            await self.release.wait()
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


def test_a_completion_that_straddles_an_update_is_tagged_with_the_version_at_completion():
    completions, proxy = straddling_completion(reports_version=None)
    assert [c.policy_version for c in completions] == [3, 3]
    assert proxy.registry.lookup(completions[0].token_ids) == 3


def test_the_replicas_own_report_wins_when_it_is_older():
    completions, _ = straddling_completion(reports_version=2)
    assert [c.policy_version for c in completions] == [2, 2]
