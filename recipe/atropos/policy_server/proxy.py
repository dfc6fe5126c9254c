"""The inference proxy: verl's rollout replicas, as environments see them.

Environments call the policy through HTTP (`routes.py`); this class is what those routes
call. It sends each request to one of verl's replica servers (round-robin), tags what comes back
with the policy version that produced it (recorded in a `PolicyVersionRegistry`), and holds a
gate the trainer closes around weight syncs: requests in flight are drained (bounded by a drain
timeout, which is logged and counted, never raised), new requests wait (bounded) until it opens.

After a drain timeout the weights can change while a request is decoded (vLLM swaps them between
decode steps): its first tokens come from the old weights, the last from the new. Such a completion
is tagged with the oldest version that may have produced a token (the one it was admitted at), so
the policy lag and `max_policy_lag` hold for every token of it; the newest is kept beside it and the
completion counted in `straddled_completions` (verl's own trainer keeps the same pair as
min/max_global_steps). Replicas that serve a request on one version and report it (hf_cpu) are
taken at their word.

vLLM cannot reset its prefix cache while requests hold blocks ("Failed to reset prefix cache because
some blocks are not freed yet", after verl's reset in update_weights), so after a drain timeout its
cache may still hold prompt KV computed by the old weights. The gate then reopens only once the
requests admitted before the update are done and the replicas' caches are reset (`cache_resets`):
new requests wait (bounded by `request_wait_timeout`), the trainer does not.

The gate and counters live on the event loop that serves HTTP; the trainer calls them from its
own thread through `InferenceService`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from recipe.atropos.policy_server.admission import AdmissionControl
from recipe.atropos.policy_server.environment_paths import REQUEST_ENVIRONMENT
from recipe.atropos.source.policy_versions import PolicyVersionRegistry

logger = logging.getLogger(__name__)


class ProxyUnavailableError(RuntimeError):
    """The gate stayed closed longer than a request may wait (answered as HTTP 503)."""


@dataclasses.dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length", as vLLM reports them
    policy_version: int  # the oldest weights that may have produced a token (what the policy lag counts)
    newest_policy_version: int  # the weights in place when it came back (newer: it straddled a weight update)

    @property
    def straddled_update(self) -> bool:
        return self.newest_policy_version > self.policy_version


@dataclasses.dataclass
class ProxyStats:
    requests: int = 0
    completions: int = 0
    completion_tokens: int = 0
    rejected_requests: int = 0  # waited past request_wait_timeout at a closed gate
    pauses: int = 0
    drain_timeouts: int = 0
    straddled_completions: int = 0  # generated across a weight update (after a drain timeout)
    cache_resets: int = 0  # replica caches reset once those requests were done
    last_drain_s: float = 0.0


async def _call(method: Any, **kwargs: Any) -> Any:
    """Call a replica server method: a Ray actor handle's `.remote`, or an in-process coroutine."""
    remote = getattr(method, "remote", None)
    return await (remote(**kwargs) if remote is not None else method(**kwargs))


def per_sample_params(sampling_params: dict[str, Any], index: int) -> dict[str, Any]:
    """The sampling parameters of the `index`-th of `n` separate samples: a request's `seed` becomes
    seed + index, so the n samples differ (n calls with one seed would return n equal samples) and the
    request stays reproducible."""
    seed = sampling_params.get("seed")
    return sampling_params if seed is None else {**sampling_params, "seed": int(seed) + index}


class InferenceProxy:
    """Round-robin over verl's replica servers behind a drainable gate (see the module docstring).

    Args:
        servers: the replicas' server handles (`LLMServerManager.server_handles`), Ray actors or
            in-process objects with verl's `generate(request_id=, prompt_ids=, sampling_params=)`.
        batched: the servers also have `generate_batch(prompt_ids=, sampling_params=, n=)` (hf_cpu);
            otherwise `n` completions are `n` concurrent `generate` calls.
        request_wait_timeout: longest wait in seconds of a new request at a closed gate.
        registry: where served completions are recorded with their policy version.
        admission: holds environments' requests so that nothing is trained stale (admission.py);
            None: every request goes on at once.
    """

    def __init__(
        self,
        servers: Sequence[Any],
        *,
        batched: bool = False,
        request_wait_timeout: float = 600.0,
        registry: PolicyVersionRegistry | None = None,
        admission: AdmissionControl | None = None,
    ) -> None:
        if not servers:
            raise ValueError("InferenceProxy needs at least one replica server")
        self.servers = list(servers)
        self.batched = batched
        self.request_wait_timeout = request_wait_timeout
        self.registry = registry if registry is not None else PolicyVersionRegistry()
        self.stats = ProxyStats()
        self.admission = admission
        self.policy_version = 0
        self._next_server = itertools.cycle(range(len(self.servers)))
        self._open: asyncio.Event | None = None
        self._idle: asyncio.Condition | None = None
        self._in_flight = 0
        self._caches_stale = False  # weights changed under requests in flight (a drain timed out)
        self._reopening: asyncio.Task | None = None  # held: the loop keeps only a weak reference to a task

    def _ensure_loop_state(self) -> None:
        # Made lazily on the serving loop: asyncio primitives belong to the loop that first uses them.
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
            self._idle = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def is_open(self) -> bool:
        return self._open is None or self._open.is_set()

    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], n: int = 1,
                       *, through_admission: bool = True) -> list[Completion]:
        """`n` completions of `prompt_ids` from one replica, through admission control (an environment's
        request; the trainer's own probes skip it) and the gate."""
        self._ensure_loop_state()
        environment = REQUEST_ENVIRONMENT.get()
        held = through_admission and self.admission is not None
        admitted_at = await self.admission.admit(n, environment) if held else None
        try:
            completions = await self._generate_through_gate(prompt_ids, sampling_params, n)
        except BaseException:
            if admitted_at is not None:
                await self.admission.withdraw(environment, admitted_at, n)
            raise
        if admitted_at is not None:
            self.admission.served(environment, admitted_at, (c.policy_version for c in completions))
        return completions

    async def _generate_through_gate(self, prompt_ids: list[int], sampling_params: dict[str, Any],
                                     n: int) -> list[Completion]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_wait_timeout
        # Checked again after every wake-up: a resume() at once followed by pause() wakes the waiters of
        # a gate that is closed again by the time they run, and they must not reach a replica mid-update.
        while not self._open.is_set():
            try:
                await asyncio.wait_for(self._open.wait(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                self.stats.rejected_requests += 1
                raise ProxyUnavailableError(
                    f"weights are being updated: waited {self.request_wait_timeout:.0f}s for the policy server"
                ) from None
        self._in_flight += 1  # no await since the gate was seen open: pause() counts this request
        self.stats.requests += 1
        try:
            completions = await self._generate_on_replica(prompt_ids, sampling_params, n, self.policy_version)
        finally:
            self._in_flight -= 1
            async with self._idle:
                self._idle.notify_all()
        for completion in completions:
            self.registry.record(completion.token_ids, completion.policy_version)
            self.stats.completion_tokens += len(completion.token_ids)
        self.stats.completions += len(completions)
        self.stats.straddled_completions += sum(c.straddled_update for c in completions)
        return completions

    async def _generate_on_replica(self, prompt_ids: list[int], sampling_params: dict[str, Any], n: int,
                                   admitted_version: int) -> list[Completion]:
        server = self.servers[next(self._next_server)]
        params = dict(sampling_params, logprobs=True)
        if self.batched:
            outputs = await _call(server.generate_batch, prompt_ids=prompt_ids, sampling_params=params, n=n)
        else:
            outputs = await asyncio.gather(*[
                _call(server.generate, request_id=uuid.uuid4().hex, prompt_ids=prompt_ids,
                      sampling_params=per_sample_params(params, index))
                for index in range(n)
            ])
        return [self._completion(output, admitted_version, self.policy_version) for output in outputs]

    def _completion(self, output: Any, admitted_version: int, current_version: int) -> Completion:
        extra = getattr(output, "extra_fields", None) or {}
        token_ids = [int(t) for t in output.token_ids]
        logprobs = list(output.log_probs or [])
        if len(logprobs) != len(token_ids):
            raise RuntimeError(f"replica returned {len(logprobs)} logprobs for {len(token_ids)} tokens")
        # verl's stop reasons: "completed" (EOS/stop), "length", "aborted", None; vLLM's: "stop", "length", "abort".
        finish = {"length": "length", "aborted": "abort"}.get(output.stop_reason, "stop")
        # vLLM reads its global_steps when the request ends; hf_cpu, the one version it served the batch on.
        served = extra.get("global_steps")
        newest = current_version if served is None else min(int(served), current_version)
        oldest = newest if self.batched else min(admitted_version, newest)
        return Completion(token_ids, logprobs, finish, oldest, newest)

    async def pause(self, drain_timeout: float, wait: bool = True) -> bool:
        """Close the gate and wait for requests in flight; False (logged, counted) when the drain timed out.
        `wait=False` only closes the gate (for replicas that order weight loads after the request being
        served themselves, as hf_cpu does): requests in flight finish while the weights travel."""
        self._ensure_loop_state()
        self._open.clear()
        self.stats.pauses += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not wait:
            self.stats.last_drain_s = 0.0
            return True
        try:
            async with self._idle:
                await asyncio.wait_for(self._idle.wait_for(lambda: self._in_flight == 0), timeout=drain_timeout)
            drained = True
        except asyncio.TimeoutError:
            self.stats.drain_timeouts += 1
            self._caches_stale = True
            logger.warning("inference proxy: %d request(s) still in flight after the %gs drain timeout; "
                           "updating weights anyway (drain timeouts so far: %d)",
                           self._in_flight, drain_timeout, self.stats.drain_timeouts)
            drained = False
        self.stats.last_drain_s = loop.time() - started
        return drained

    async def resume(self, policy_version: int | None = None) -> None:
        """Open the gate; completions served from now on carry `policy_version`. After a drain timeout the
        gate opens later, once the replicas' caches are clean (see the module docstring)."""
        self._ensure_loop_state()
        if policy_version is not None:
            self.policy_version = int(policy_version)
        if self._caches_stale:
            self._reopening = asyncio.ensure_future(self._reopen_with_clean_caches(self.stats.pauses))
        else:
            self._open.set()

    async def _reopen_with_clean_caches(self, pauses: int) -> None:
        straddling = self._in_flight
        async with self._idle:
            await self._idle.wait_for(lambda: self._in_flight == 0)
        try:
            await asyncio.gather(*(_call(server.clear_kv_cache) for server in self.servers))
        except Exception:  # serving on is better than a closed gate; the error says what may be stale
            logger.exception("inference proxy: resetting the replicas' caches after a drain timeout failed; "
                             "prompt KV of the previous weights may be reused")
        else:
            self.stats.cache_resets += 1
            logger.info("inference proxy: reset the replicas' caches after the %d request(s) in flight during the "
                        "weight update were done; accepting requests again", straddling)
        self._caches_stale = False
        if self.stats.pauses == pauses:  # not closed again for the next sync meanwhile
            self._open.set()
