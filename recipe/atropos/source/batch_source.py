"""AtroposBatchSource: each training step's validated Atropos groups, and the metrics of getting them.

It hides what lies between the trajectory API and a trainer: registration (again, when run-api lost
it), polling, the fallback decision, the background prefetch, the group buffer that makes every step
exactly `batch_size` sequences, the stale-group filter, and the journal that keeps every popped batch
until a checkpoint covers it (and replays it on resume). A trainer asks `next_batch(step)` and tells
the source when a step's checkpoint is written and when the step is done; it needs no Ray, so verl's
legacy trainer and a v1 trainer use it alike.

Nothing is lost on a crash: each pulled batch is journaled (`<journal_dir>`) before training and
dropped once a checkpoint covers its step; a run that resumes the checkpoint the journal belongs to
replays the journaled batches newer than it first, then registers with `starting_step` = the restored
step. A journal of another run is moved aside, never trained.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable

from recipe.atropos.data.batch_metrics import load_env_names
from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.data.errors import (
    AtroposBatchRequestFailedError,
    AtroposNotRegisteredError,
    AtroposUnavailableError,
)
from recipe.atropos.data.scored_group import AtroposBatch, ScoredGroup
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.source.batch_journal import BatchJournal, RunIdentity, open_journal
from recipe.atropos.source.batch_prefetcher import BatchPrefetcher
from recipe.atropos.source.group_buffer import GroupBuffer
from recipe.atropos.source.policy_lag import filter_stale_groups
from recipe.atropos.source.policy_versions import PolicyVersionRegistry
from recipe.atropos.source.step_drops import (
    BUFFER_AGE,
    BUFFER_SIZE,
    OVERSIZED,
    STALE,
    UNKNOWN_VERSION,
    StepDrops,
)
from recipe.atropos.source.trained_groups import TrainedGroups

logger = logging.getLogger(__name__)

# Fault injection for tests: exit (code 75) right after journaling this step's batch, before training.
FAULT_EXIT_AFTER_JOURNAL_ENV = "ATROPOS_FAULT_EXIT_AFTER_JOURNAL_STEP"


class AtroposStopError(RuntimeError):
    """The run must stop: no usable batch within max_wait_time and fallback_to_grpo is off, or the
    API has never answered (see `fallback_before_api_reached`)."""


@dataclasses.dataclass(frozen=True)
class Registration:
    """What the trainer tells run-api at `POST /register` (batch_size: sequences per step)."""

    batch_size: int
    max_token_len: int
    num_steps: int
    checkpoint_dir: str = ""
    save_checkpoint_interval: int = -1
    wandb_group: str = "verl_atropos"
    wandb_project: str = "verl_atropos"


class AtroposBatchSource:
    """One step's groups at a time from run-api (module docstring).

    Args:
        client: the trajectory API client; its config holds the source's settings (trainer.atropos).
        registration: what to register; `batch_size` is the exact number of sequences of each step.
        max_policy_lag: groups generated more updates ago than this are dropped (None: kept, the lag
            still measured). The trainer passes None when it serves the initial weights on purpose.
    """

    def __init__(self, client: AtroposEnvironmentClient, registration: Registration, *,
                 max_policy_lag: int | None = None) -> None:
        self.client = client
        self.config: AtroposClientConfig = client.config
        self.registration = registration
        self.sequences_per_step = registration.batch_size
        self.max_policy_lag = max_policy_lag
        self.version_registry = PolicyVersionRegistry()  # filled by the policy server that serves the environments
        self.group_buffer = GroupBuffer(max_groups=self.config.max_buffered_groups,
                                        max_age_steps=self.config.max_buffer_age_steps)
        self.trained_groups = TrainedGroups()
        self.prefetcher = BatchPrefetcher(self._prefetch_poll) if self.config.prefetch != "off" else None
        self.journal: BatchJournal | None = None  # opened by `open`, once the trainer has restored its checkpoint
        self.replay_steps: list[int] = []
        self.registered = False
        self.api_reached = False  # registered once in this process: fallback is for outages after that
        self.registered_starting_step = -1
        self.fallback_steps = 0
        self.step_env_names: dict[int, str] = {}  # env_id -> name (launcher's names file) when the last batch came
        self.stale_groups_total = 0
        self.buffer_dropped_total = 0
        self.dropped_groups_total = 0
        self.step_drops = StepDrops()  # what the current step dropped while gathering its batch
        # For the policy server's admission control: told when the trainer starts and stops waiting for a
        # step's batch, and given the valid groups of every batch pulled from the server.
        self.trainer_waiting: Callable[[bool], None] | None = None
        self.groups_pulled: Callable[[list[ScoredGroup]], None] | None = None
        self.gathering_ran_out = ""  # why the current step's gathering ended without a batch, when it did
        self.api_down = False  # ... because the API could not be reached
        # Seconds of `/batch` polling (wherever it ran), and of it what the trainer waited for.
        self.poll_seconds = {"step_exposed": 0.0, "poll": 0.0, "exposed": 0.0, "prefetched": 0}

    # ------------------------------------------------------------------ lifecycle
    def open(self, journal_dir: str, run: RunIdentity) -> None:
        """The journal of the checkpoint the trainer restored (run.resumed_step), or a fresh one: its
        batches newer than that step are trained first, its buffered groups go back in the buffer."""
        restored_step = run.resumed_step
        self.journal, _ = open_journal(journal_dir, run)
        self.replay_steps = self.journal.pending(after_step=restored_step)
        buffered = self.journal.load_buffer()
        if buffered:
            self.group_buffer.add(self.client.validate_batch(buffered), restored_step)
            logger.warning("Resuming with %d pulled but untrained Atropos group(s) from the journal", len(self.group_buffer))
            self.journal.save_buffer(restored_step, self.group_buffer.scored_data())
            self.journal.clear_prefetched()
        self.journal.covered(restored_step)
        if self.replay_steps:
            logger.warning("Resuming at step %d: %d journaled Atropos batch(es) to train first: steps %s",
                           restored_step, len(self.replay_steps), self.replay_steps)

    def wait_for_environments(self, step: int) -> None:
        """With a launcher's names file configured: register (which opens the API to environments) and
        wait, up to max_wait_time, until the launcher says every environment is registered, so the
        first batch is not formed from whichever environment started first."""
        names_file = self.config.env_names_file
        if not names_file or os.path.exists(names_file):
            return
        try:
            batch = self._register(step)
        except (AtroposUnavailableError, AtroposNotRegisteredError) as exc:
            logger.warning("not waiting for environments: %s", exc)
            return
        if batch is not None:
            self.group_buffer.add(batch, step)
            self.journal.save_buffer(step - 1, self.group_buffer.scored_data())
        deadline = time.monotonic() + self.config.max_wait_time
        while not os.path.exists(names_file) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not os.path.exists(names_file):
            logger.warning("environments not all registered after %.0fs (no %s): training anyway",
                           self.config.max_wait_time, names_file)

    def next_batch(self, step: int) -> tuple[AtroposBatch | None, dict[str, float]]:
        """Step `step`'s groups (exactly `batch_size` sequences, journaled) and the source's metrics;
        None when Atropos gave no usable batch in time and `fallback_to_grpo` lets the trainer make
        its own batch. Raises AtroposStopError when it may not. The groups dropped while gathering
        are in the metrics either way (`atropos/dropped_groups/<reason>[/<environment>]`)."""
        self.step_env_names = load_env_names(self.config.env_names_file)  # read once a step, for its metrics
        self.step_drops = StepDrops()
        self.gathering_ran_out, self.api_down = "", False
        replayed = bool(self.replay_steps)
        if self.trainer_waiting is not None:
            self.trainer_waiting(True)
        try:
            batch = self._replayed_batch(step) if replayed else self._fresh_batch(step)
        finally:
            if self.trainer_waiting is not None:
                self.trainer_waiting(False)
        metrics = self._drop_metrics()
        if batch is None or not batch.groups:
            return None, {**self._ran_out(step), **metrics}
        # Lag of what is trained (nothing dropped here: stale groups left the buffer already).
        lag = filter_stale_groups(batch.groups, self.version_registry, step - 1, None, env_names=self.step_env_names)
        repeated = self.trained_groups.record(batch.groups)
        if repeated:
            logger.error("step %d trains %d group(s) already trained in this run", step, repeated)
        return batch, {**lag.metrics, **metrics,
                       "atropos/repeated_groups_total": float(self.trained_groups.repeated_total),
                       "atropos/fallback_steps": float(self.fallback_steps),
                       "atropos/from_atropos": 1.0,
                       "atropos/replayed": float(replayed)}

    def _drop_metrics(self) -> dict[str, float]:
        drops = self.step_drops
        stale = drops.total(STALE) + drops.total(UNKNOWN_VERSION)
        buffer_dropped = drops.total(BUFFER_AGE) + drops.total(BUFFER_SIZE)
        self.stale_groups_total += stale
        self.buffer_dropped_total += buffer_dropped
        self.dropped_groups_total += drops.total()
        return {**drops.metrics(self.step_env_names),
                "atropos/dropped_groups_total": float(self.dropped_groups_total),
                "atropos/stale_groups_dropped": float(stale),
                "atropos/stale_groups_dropped_total": float(self.stale_groups_total),
                "atropos/buffered_groups": float(len(self.group_buffer)),
                "atropos/buffer_dropped_groups": float(buffer_dropped),
                "atropos/buffer_dropped_groups_total": float(self.buffer_dropped_total),
                **self._poll_metrics()}

    def _ran_out(self, step: int) -> dict[str, float]:
        """The step got no batch: stop (AtroposStopError naming why and what was dropped), or count a
        fallback step and return its metrics."""
        why = self.gathering_ran_out or f"No Atropos batch within trainer.atropos.max_wait_time={self.config.max_wait_time:.0f}s"
        dropped = self.step_drops.describe(self.step_env_names)
        if self.step_drops.total():
            advice = (f"Groups dropped while gathering it, by reason (environment count): {dropped}; each drop is "
                      "logged with its group and field.")
        elif self.api_down:
            advice = "It answered before: an outage (fallback steps end once it answers again)."
        else:
            advice = ("The API answers, so no environment sent enough groups: see the launcher's warnings about "
                      "silent environments and each environment's log.")
        if not self.config.fallback_to_grpo:
            raise AtroposStopError(f"{why} and trainer.atropos.fallback_to_grpo is false: stopping at step {step}. {advice}")
        self.fallback_steps += 1
        logger.warning("%s: step %d falls back to GRPO on the local dataset. %s", why, step, advice)
        return {"atropos/fallback_steps": float(self.fallback_steps), "atropos/from_atropos": 0.0}

    def checkpoint_started(self, step: int, checkpoint_folder: str) -> None:
        """The trainer is about to write step `step`'s checkpoint into `checkpoint_folder`."""
        self.journal.mark_checkpoint(checkpoint_folder, step)

    def checkpoint_saved(self, step: int) -> None:
        """Step `step`'s checkpoint is written: the batches it covers leave the journal."""
        self.journal.checkpoint_saved(step)
        self.journal.covered(step)

    def step_trained(self, step: int, *, checkpointing: bool) -> None:
        """Step `step` is trained and its weights are about to be synced. Without checkpoints, its
        journal entry only bridged a crash mid-step and goes now. With `prefetch: sync`, the next
        step's poll starts here, so the server's serve time overlaps the weight transfer."""
        if not checkpointing:
            self.journal.covered(step)
        if self.config.prefetch == "sync":
            self._start_prefetch(step)

    def close(self) -> None:
        """Stop a background poll; a batch it pulled stays journaled (prefetched.json) for a resumed run."""
        if self.prefetcher is not None:
            self.prefetcher.close(timeout=self.config.timeout)

    def run_metrics(self) -> dict[str, float]:
        """Totals since the source was made."""
        stats = self.client.stats
        return {"atropos/invalid_groups_total": float(stats.invalid_groups),
                "atropos/batch_requests_failed_after_send_total": float(stats.batch_requests_failed_after_send),
                "atropos/registered_starting_step": float(self.registered_starting_step)}

    # ------------------------------------------------------------------ the API
    def _register(self, step: int) -> AtroposBatch | None:
        """Register with the step count we resume from, then open the API to environments (its first
        `/batch`). A batch that first call returns is kept: `/batch` pops it on the server. That call
        failing after it was sent (a 500 for a batch run-api cannot encode) is counted by the client
        and the poll goes on, as for every other `/batch`."""
        completed_steps = step - 1
        self.client.register(**dataclasses.asdict(self.registration), starting_step=completed_steps)
        self.registered = True
        self.api_reached = True
        self.registered_starting_step = completed_steps
        try:
            return self.client.get_batch()
        except AtroposBatchRequestFailedError as exc:
            logger.warning("the first /batch after registering failed (%s): polling on", exc)
            return None

    def _wait_for_first_contact(self, step: int, deadline: float) -> None:
        """Before the API has ever answered: wait for it until `deadline`, then stop the run. Fallback
        is for outages of an API that was reached; a run whose API never answered would otherwise train
        plain GRPO from its first step with only a metric to say so."""
        interval = self.config.poll_interval
        while not self.client.health():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AtroposStopError(
                    f"The Atropos API at {self.client.base_url} (trainer.atropos.api_url) has not answered since the "
                    f"run started: waited trainer.atropos.max_wait_time={self.config.max_wait_time:.0f}s before step "
                    f"{step}. Start atroposlib's `run-api` there and your environments, or train through the launcher "
                    "(`python -m recipe.atropos.launcher --config <yaml>`), which starts both. To train verl's GRPO on "
                    "data.train_files until it answers, set trainer.atropos.fallback_before_api_reached=true.")
            logger.info("waiting for the Atropos API at %s (trainer.atropos.api_url) before step %d: %.0fs left",
                        self.client.base_url, step, remaining)
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, self.config.max_poll_interval)

    def _poll(self, step: int, deadline: float) -> AtroposBatch | None:
        """A batch from Atropos, or None when it is unavailable or sent nothing before `deadline`; its
        groups are reported to `groups_pulled` as soon as it is pulled (as the prefetch poll does)."""
        batch = self._pull(step, deadline)
        self._report_pulled(batch)
        return batch

    def _pull(self, step: int, deadline: float) -> AtroposBatch | None:
        fallback = self.config.fallback_to_grpo
        if not self.api_reached and not (fallback and self.config.fallback_before_api_reached):
            self._wait_for_first_contact(step, deadline)
        elif fallback and not self.client.health():
            self.registered = False
            self.gathering_ran_out, self.api_down = f"The Atropos API at {self.client.base_url} is not answering", True
            return None
        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.05)

        try:
            if not self.registered:
                batch = self._register(step)
                if batch is not None:  # popped: its groups, or its invalid ones to count
                    return batch
            try:
                return self.client.poll_batch(max_wait_time=remaining())
            except AtroposNotRegisteredError:
                logger.warning("Atropos lost its registration (restarted or reset): registering again at step %d", step - 1)
                self.registered = False
                batch = self._register(step)
                return batch if batch is not None else self.client.poll_batch(max_wait_time=remaining())
        except AtroposUnavailableError as exc:
            self.registered = False
            if not fallback:
                raise AtroposStopError(
                    f"Atropos unavailable for {self.config.max_wait_time:.0f}s and "
                    f"trainer.atropos.fallback_to_grpo is false: stopping at step {step}. ({exc})"
                ) from exc
            self.gathering_ran_out, self.api_down = f"Atropos unavailable ({exc})", True
            return None

    # ------------------------------------------------------------------ one step's groups
    def _replayed_batch(self, step: int) -> AtroposBatch:
        """The next journaled batch of a resumed run (it is trained as it was pulled)."""
        journaled_step = self.replay_steps.pop(0)
        logger.warning("Replaying the journaled Atropos batch of step %d as step %d", journaled_step, step)
        self.journal.renumber(journaled_step, step)  # one rename: a crash leaves exactly one entry
        return self.client.validate_batch(self.journal.load(step))

    def _drop_from_buffer(self, step: int) -> None:
        """Remove buffered groups that step `step` must not train, each logged and counted in the
        step's drops: larger than a step, older than max_policy_lag (or of unknown version, with
        drop_unknown_version_groups), past the buffer's age and size bounds."""
        drops = self.step_drops
        for group in self.group_buffer.remove_if(lambda g: g.size > self.sequences_per_step):
            logger.error("dropping group %d (env_id=%s): %d sequences cannot fit a step of %d; make the environment's "
                         "group_size divide the batch", group.group_index, group.env_id, group.size, self.sequences_per_step)
            drops.add(OVERSIZED, group.env_id)
        if self.max_policy_lag is not None and len(self.group_buffer):  # filter_stale_groups logs each drop
            lag = filter_stale_groups(self.group_buffer.entries, self.version_registry, step - 1, self.max_policy_lag,
                                      drop_unknown=self.config.drop_unknown_version_groups)
            for reason, groups in ((STALE, lag.stale), (UNKNOWN_VERSION, lag.unknown)):
                leaving = {id(group) for group in groups}
                for group in self.group_buffer.remove_if(lambda g: id(g) in leaving):
                    drops.add(reason, group.env_id)
        for group, reason, why in self.group_buffer.drop_over_bounds(step):
            logger.warning("dropping buffered group %d (env_id=%s, %d sequences) at step %d: %s",
                           group.group_index, group.env_id, group.size, step, why)
            drops.add(reason, group.env_id)

    def _fresh_batch(self, step: int) -> AtroposBatch | None:
        """Exactly one step's sequences of valid, fresh-enough groups: buffered ones first, topped up
        from `/batch`; journaled (with what is left over) before use. None, with the reason in
        `gathering_ran_out`, when Atropos gave nothing usable in time: gathering is bounded by
        max_wait_time and by max_unusable_batches answers in a row that held nothing this step can train."""
        polled: list[AtroposBatch] = []
        deadline = time.monotonic() + self.config.max_wait_time
        unusable = 0
        self.poll_seconds["step_exposed"] = 0.0
        self._drop_from_buffer(step)
        while (taken := self.group_buffer.take_exact(self.sequences_per_step)) is None:
            if unusable >= self.config.max_unusable_batches:
                self.gathering_ran_out = (f"{unusable} Atropos batches in a row held no group step {step} could train "
                                          f"(trainer.atropos.max_unusable_batches={self.config.max_unusable_batches})")
                return None
            if time.monotonic() >= deadline:
                self.gathering_ran_out = (f"No usable Atropos batch of {self.sequences_per_step} sequences for step {step} "
                                          f"within trainer.atropos.max_wait_time={self.config.max_wait_time:.0f}s")
                return None
            started = time.monotonic()
            pending = self.prefetcher is not None and self.prefetcher.pending
            batch = self._prefetched_batch(step, deadline) if pending else self._poll(step, deadline)
            self._count_poll(time.monotonic() - started, batch.wait_s if batch is not None else 0.0)
            if batch is None:
                return None
            polled.append(batch)
            for bad in batch.invalid:
                self.step_drops.add(f"invalid_{bad.metric_key}", bad.env_id)
            if not batch.groups:
                logger.warning("Atropos batch at step %d had no valid group (%d invalid)", step, len(batch.invalid))
            self.group_buffer.add(batch, step)
            self._drop_from_buffer(step)
            buffered = {group.uid for group in self.group_buffer.entries}
            unusable = 0 if any(group.uid in buffered for group in batch.groups) else unusable + 1
            # Popped on the server: kept on disk until a step's journal entry takes it over.
            self.journal.save_buffer(step - 1, self.group_buffer.scored_data())
            self.journal.clear_prefetched()
        self.journal.record(step, [group.to_scored_data() for group in taken])
        self.journal.save_buffer(step, self.group_buffer.scored_data())
        if self.prefetcher is None or not self.prefetcher.pending:
            self.journal.clear_prefetched()  # its groups are in the step or the buffer now
        if self.config.prefetch == "step":
            self._start_prefetch(step)
        if os.environ.get(FAULT_EXIT_AFTER_JOURNAL_ENV) == str(step):
            logger.error("fault injection: exiting after journaling step %d", step)
            os._exit(75)
        return AtroposBatch.of_step(taken, polled)

    # ------------------------------------------------------------------ prefetch (batch_prefetcher.py)
    def _start_prefetch(self, step: int) -> None:
        """Poll the next step's batch in the background, when the next step will need one from the
        server (not the last step, no journaled batch to replay, the buffer cannot fill it).

        Started at the weight sync by default (`prefetch: sync`): the queue then holds what a poll at
        the next step would find, and the server's serve time overlaps the weight transfer. From the
        start of the step (`prefetch: step`) the whole poll is hidden but the batch is the one queued a
        step earlier (measured on the CPU demo: policy lag 2 instead of 1; with max_policy_lag 2, groups
        dropped and the mix skewed towards the faster environment)."""
        if (self.prefetcher is None or not self.registered or step >= self.registration.num_steps
                or self.replay_steps or self.group_buffer.can_fill(self.sequences_per_step)):
            return
        self.prefetcher.start()

    def _prefetch_poll(self, stop: threading.Event) -> AtroposBatch | None:
        """Runs in the prefetch thread: one `poll_batch`, journaled as soon as it is pulled."""
        batch = self.client.poll_batch(stop=stop)
        if batch is not None and batch.groups:
            self.journal.save_prefetched([group.to_scored_data() for group in batch.groups])
        self._report_pulled(batch)
        return batch

    def _report_pulled(self, batch: AtroposBatch | None) -> None:
        """Hand a pulled batch's valid groups to `groups_pulled` (admission control), as soon as they are pulled."""
        if self.groups_pulled is not None and batch is not None and batch.groups:
            try:
                self.groups_pulled(batch.groups)
            except Exception:  # noqa: BLE001 (accounting only: the batch is ours and journaled either way)
                logger.exception("could not tell admission control about %d pulled group(s)", len(batch.groups))

    def _prefetched_batch(self, step: int, deadline: float) -> AtroposBatch | None:
        """The prefetched batch; when its poll failed (server gone, registration lost), the usual path
        decides: health check, registering again, fallback."""
        try:
            batch, _ = self.prefetcher.take()
        except (AtroposUnavailableError, AtroposNotRegisteredError) as exc:
            logger.warning("prefetch poll failed (%s): polling again in the trainer", exc)
            self.registered = False
            return self._poll(step, deadline)
        if batch is None:
            logger.warning("No Atropos batch within %.1fs (prefetch)", self.config.max_wait_time)
            return None
        self.poll_seconds["prefetched"] += 1
        return batch

    def _count_poll(self, exposed_s: float, poll_s: float) -> None:
        for key, value in (("step_exposed", exposed_s), ("exposed", exposed_s), ("poll", poll_s)):
            self.poll_seconds[key] += value

    def _poll_metrics(self) -> dict[str, float]:
        seconds = self.poll_seconds
        return {
            "atropos/poll_exposed_wait_s": seconds["step_exposed"],
            "atropos/prefetched_batches_total": float(seconds["prefetched"]),
            # Share of all polling so far that ran while a step trained: 0 without prefetch.
            "atropos/poll_hidden_share": max(0.0, 1.0 - seconds["exposed"] / seconds["poll"]) if seconds["poll"] > 0 else 0.0,
        }
