"""Admission control: environments' requests held so that nothing they generate is trained stale.

A completion generated on policy version V may be trained until the trainer has applied
V + max_policy_lag updates. The trainer pulls its next batch at each weight sync (prefetch) and
trains it in the following step, so a completion pulled within max_policy_lag syncs of its version
is trained in time. The window therefore holds max_policy_lag steps' sequences (at least one step):
a request for `n` completions is admitted when the completions admitted at versions still inside
it (V - max_policy_lag .. V) and not yet pulled by the trainer, plus its `n`, fit; otherwise it
waits and is admitted as the trainer pulls batches and the version moves on. (One step more would
let environments fill two batches ahead; run-api forms every full batch at once and hands out the
newest first, so the older one would wait a step longer and go stale.) An environment only sees a
slower answer, never an error; it is bounded by `max_hold_s`, after which the request goes on
(counted). AReaL and SkyRL bound staleness the same way inside their own rollout workers; here it
sits at the gateway, so unmodified environments are held.

With `shares` (environment name -> share; the launcher passes the weights), each environment has
its own part of the window, its share of the capacity: an environment that produces faster than its
share is trained cannot fill the window with groups that then wait in the queue for their turn and
go stale (the slower environment's groups, when it is the one that overproduces). A request is
known by its path (`/env-<name>/...`, environment_paths.py); one from no named environment counts
against the whole window only.

Completions that never reach the trainer (a group an environment discarded, e.g. for equal scores;
the turns of a multi-turn group, several requests for one sequence) stay counted until their version leaves the window. So that they cannot hold the window
shut while the trainer waits for data that will not come (an environment whose group needs more
requests than the window has left, too), the window grows by one step's sequences for every
`starved_grace_s` the trainer waits for its next batch, back to its size once the batch is there
(requests admitted so are counted in `released_starved`): bounded, so a long wait at start-up does
not let every environment run ahead at once.

Its state lives on the policy server's event loop; the trainer's thread reaches it through
`InferenceService` (`delivered`, `resume`, `trainer_waiting`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class AdmissionStats:
    held_requests: int = 0  # requests that waited for room in the window
    held_s: float = 0.0  # their waits, summed
    released_starved: int = 0  # admitted in the room a starving trainer's wait added (module docstring)
    released_max_hold: int = 0  # let through after waiting max_hold_s


class AdmissionControl:
    """The window of completions that can still be trained fresh (module docstring).

    Args:
        sequences_per_step: what one step trains (the trainer's batch_size in sequences).
        max_policy_lag: trainer.atropos.max_policy_lag.
        shares: environment name -> its share of the window (normalised here); None: one window.
        starved_grace_s: every this many seconds the trainer waits for data, the window grows by a step.
        max_hold_s: the longest one request is held.
    """

    def __init__(self, sequences_per_step: int, max_policy_lag: int, *, shares: Mapping[str, float] | None = None,
                 starved_grace_s: float, max_hold_s: float) -> None:
        if sequences_per_step < 1 or max_policy_lag < 0:
            raise ValueError(f"admission control needs sequences_per_step >= 1 and max_policy_lag >= 0, got "
                             f"{sequences_per_step} and {max_policy_lag}")
        if shares is not None and (not shares or any(not share > 0 for share in shares.values())):
            raise ValueError(f"admission control: every environment's share must be > 0, got {dict(shares)}")
        self.sequences_per_step = sequences_per_step
        self.capacity = max(max_policy_lag, 1) * sequences_per_step
        self.max_policy_lag = max_policy_lag
        total = sum(shares.values()) if shares else 0.0
        self.shares = {name: share / total for name, share in (shares or {}).items()}
        self.starved_grace_s = starved_grace_s
        self.max_hold_s = max_hold_s
        self.version = 0
        self.stats = AdmissionStats()
        # (environment or None, version) -> completions admitted / sequences pulled by the trainer
        self._admitted: collections.Counter[tuple[str | None, int]] = collections.Counter()
        self._delivered: collections.Counter[tuple[str | None, int]] = collections.Counter()
        self._starved_steps = 0  # grace periods the trainer has waited for its batch: a step of room each
        self._starve_timer: asyncio.TimerHandle | None = None
        self._waking: asyncio.Future | None = None
        self._changed: asyncio.Condition | None = None  # made on the serving loop, where it is used

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def _window(self, environment: str | None) -> str | None:
        return environment if environment in self.shares else None

    def outstanding(self, environment: str | None = None, *, everyone: bool = True) -> int:
        """Completions admitted at versions inside the window and not pulled by the trainer yet: of
        everyone, or of `environment`'s part (`everyone=False`)."""
        low = self.version - self.max_policy_lag
        return sum(max(count - self._delivered[key], 0) for key, count in self._admitted.items()
                   if key[1] >= low and (everyone or key[0] == environment))

    def _room(self, starved_steps: int) -> int:
        return self.capacity + starved_steps * self.sequences_per_step

    def _fits(self, n: int, window: str | None, starved_steps: int = 0) -> bool:
        total = self.outstanding()
        if total == 0:
            return True  # a request larger than the window goes alone
        room = self._room(starved_steps)
        if total + n > room:
            return False
        if window is None:
            return True
        mine = self.outstanding(window, everyone=False)
        return mine == 0 or mine + n <= self.shares[window] * room

    async def admit(self, n: int, environment: str | None = None) -> int:
        """Wait until `n` completions of `environment` fit (bounded, module docstring); the version they count at."""
        window = self._window(environment)
        if not self._fits(n, window):
            if self._fits(n, window, self._starved_steps):
                self.stats.released_starved += 1
            else:
                await self._hold(n, window)
        self._admitted[(window, self.version)] += n
        return self.version

    async def _hold(self, n: int, window: str | None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats.held_requests += 1
        changed = self._condition()
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(lambda: self._fits(n, window, self._starved_steps)),
                                       self.max_hold_s)
            except asyncio.TimeoutError:
                self.stats.released_max_hold += 1
                logger.warning("admission control: a request for %d completion(s) of %s waited %.0fs "
                               "(trainer.atropos_inference.request_wait_timeout) for room in the window of %d "
                               "(%d outstanding at policy version %d); serving it anyway", n, window or "an environment",
                               self.max_hold_s, self.capacity, self.outstanding(), self.version)
            else:
                if not self._fits(n, window):
                    self.stats.released_starved += 1
        self.stats.held_s += loop.time() - started

    def served(self, environment: str | None, admitted_at: int, versions: Iterable[int]) -> None:
        """What an admitted request produced: each completion counts at the version it was tagged with."""
        window = self._window(environment)
        for version in versions:
            if version != admitted_at:
                self._admitted[(window, admitted_at)] -= 1
                self._admitted[(window, version)] += 1

    async def withdraw(self, environment: str | None, admitted_at: int, n: int) -> None:
        """A request that produced nothing (its replica call failed) leaves the window."""
        self._admitted[(self._window(environment), admitted_at)] -= n
        await self._notify()

    async def delivered(self, sequences: Iterable[tuple[str | None, int | None]]) -> None:
        """The trainer pulled sequences of (environment, policy version) (version None: unknown, not counted)."""
        self._delivered.update((self._window(environment), v) for environment, v in sequences if v is not None)
        await self._notify()

    async def advance(self, version: int) -> None:
        """The servers now hold `version`: versions that left the window are forgotten."""
        self.version = int(version)
        low = self.version - self.max_policy_lag
        for counter in (self._admitted, self._delivered):
            for old in [key for key in counter if key[1] < low]:
                del counter[old]
        await self._notify()

    async def trainer_waiting(self, waiting: bool) -> None:
        """The trainer waits for its next batch (True) or has it (False): each `starved_grace_s` of
        waiting adds a step of room to the window (module docstring)."""
        if self._starve_timer is not None:
            self._starve_timer.cancel()
            self._starve_timer = None
        self._starved_steps = 0
        if waiting:
            self._starve_timer = asyncio.get_running_loop().call_later(self.starved_grace_s, self._starve)

    def _starve(self) -> None:
        self._starved_steps += 1
        if self.outstanding() >= self.capacity:
            logger.warning("admission control: the trainer has waited %.0fs for data with the window full (%d of %d "
                           "completions outstanding at policy version %d): %d more may go on (completions lost on "
                           "the way, e.g. groups an environment discarded, hold the window)",
                           self._starved_steps * self.starved_grace_s, self.outstanding(), self.capacity, self.version,
                           self.sequences_per_step)
        self._starve_timer = asyncio.get_running_loop().call_later(self.starved_grace_s, self._starve)
        self._waking = asyncio.ensure_future(self._notify())  # held: the loop keeps only a weak reference

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def metrics(self) -> dict[str, float]:
        """`atropos/inference/admission/*` (a coroutine: the counts change on the serving loop)."""
        prefix = "atropos/inference/admission/"
        return {
            f"{prefix}held_requests": float(self.stats.held_requests),
            f"{prefix}held_s": float(self.stats.held_s),
            f"{prefix}released_starved": float(self.stats.released_starved),
            f"{prefix}released_max_hold": float(self.stats.released_max_hold),
            f"{prefix}outstanding": float(self.outstanding()),
            f"{prefix}capacity": float(self.capacity),
            **{f"{prefix}outstanding/{name}": float(self.outstanding(name, everyone=False)) for name in self.shares},
        }
