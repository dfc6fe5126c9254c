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

from recipe.atropos.data.batch_metrics import load_env_names
from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.data.errors import AtroposNotRegisteredError, AtroposUnavailableError
from recipe.atropos.data.scored_group import AtroposBatch
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.source.batch_journal import BatchJournal, RunIdentity, open_journal
from recipe.atropos.source.batch_prefetcher import BatchPrefetcher
from recipe.atropos.source.group_buffer import GroupBuffer
from recipe.atropos.source.policy_lag import filter_stale_groups
from recipe.atropos.source.policy_versions import PolicyVersionRegistry
from recipe.atropos.source.trained_groups import TrainedGroups

logger = logging.getLogger(__name__)

# Fault injection for tests: exit (code 75) right after journaling this step's batch, before training.
FAULT_EXIT_AFTER_JOURNAL_ENV = "ATROPOS_FAULT_EXIT_AFTER_JOURNAL_STEP"


class AtroposStopError(RuntimeError):
    """Atropos gave no batch within max_wait_time and fallback_to_grpo is off."""


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
        self.registered_starting_step = -1
        self.fallback_steps = 0
        self.step_env_names: dict[int, str] = {}  # env_id -> name (launcher's names file) when the last batch came
        self.stale_groups_total = 0
        self.buffer_dropped_total = 0
        self.buffer_dropped_step = 0
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
        None when Atropos gave nothing in time and `fallback_to_grpo` lets the trainer make its own
        batch. Raises AtroposStopError when it may not."""
        replayed = bool(self.replay_steps)
        batch, stale = (self._replayed_batch(step), 0) if replayed else self._fresh_batch(step)
        self.stale_groups_total += stale
        metrics = {"atropos/stale_groups_dropped": float(stale),
                   "atropos/stale_groups_dropped_total": float(self.stale_groups_total),
                   "atropos/buffered_groups": float(len(self.group_buffer)),
                   "atropos/buffer_dropped_groups": float(self.buffer_dropped_step),
                   "atropos/buffer_dropped_groups_total": float(self.buffer_dropped_total),
                   **self._poll_metrics()}
        if batch is None or not batch.groups:
            if not self.config.fallback_to_grpo:
                raise AtroposStopError(
                    f"No Atropos batch within trainer.atropos.max_wait_time={self.config.max_wait_time:.0f}s and "
                    f"trainer.atropos.fallback_to_grpo is false: stopping at step {step}. The API answers, so "
                    "no environment sent enough groups: see the launcher's warnings about silent environments and each "
                    "environment's log.")
            self.fallback_steps += 1
            return None, {"atropos/fallback_steps": float(self.fallback_steps), "atropos/from_atropos": 0.0, **metrics}
        # Lag of what is trained (nothing dropped here: stale groups left the buffer already).
        self.step_env_names = load_env_names(self.config.env_names_file)  # read once a step, for its metrics
        lag = filter_stale_groups(batch.groups, self.version_registry, step - 1, None, env_names=self.step_env_names)
        repeated = self.trained_groups.record(batch.groups)
        if repeated:
            logger.error("step %d trains %d group(s) already trained in this run", step, repeated)
        return batch, {**lag.metrics, **metrics,
                       "atropos/repeated_groups_total": float(self.trained_groups.repeated_total),
                       "atropos/fallback_steps": float(self.fallback_steps),
                       "atropos/from_atropos": 1.0,
                       "atropos/replayed": float(replayed)}

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
        `/batch`). A batch that first call returns is kept: `/batch` pops it on the server."""
        completed_steps = step - 1
        self.client.register(**dataclasses.asdict(self.registration), starting_step=completed_steps)
        self.registered = True
        self.registered_starting_step = completed_steps
        return self.client.get_batch()

    def _poll(self, step: int) -> AtroposBatch | None:
        """A batch from Atropos, or None when it is unavailable or sent nothing in time."""
        fallback = self.config.fallback_to_grpo
        if fallback and not self.client.health():
            logger.warning("Atropos API at %s is not answering: step %d falls back to GRPO on the local dataset",
                           self.client.base_url, step)
            self.registered = False
            return None
        try:
            if not self.registered:
                batch = self._register(step)
                if batch is not None and batch.groups:
                    return batch
            try:
                return self.client.poll_batch()
            except AtroposNotRegisteredError:
                logger.warning("Atropos lost its registration (restarted or reset): registering again at step %d", step - 1)
                self.registered = False
                batch = self._register(step)
                return batch if batch is not None and batch.groups else self.client.poll_batch()
        except AtroposUnavailableError as exc:
            self.registered = False
            if not fallback:
                raise AtroposStopError(
                    f"Atropos unavailable for {self.config.max_wait_time:.0f}s and "
                    f"trainer.atropos.fallback_to_grpo is false: stopping at step {step}. ({exc})"
                ) from exc
            logger.warning("%s; step %d falls back to GRPO on the local dataset", exc, step)
            return None

    # ------------------------------------------------------------------ one step's groups
    def _replayed_batch(self, step: int) -> AtroposBatch:
        """The next journaled batch of a resumed run (it is trained as it was pulled)."""
        journaled_step = self.replay_steps.pop(0)
        logger.warning("Replaying the journaled Atropos batch of step %d as step %d", journaled_step, step)
        self.journal.renumber(journaled_step, step)  # one rename: a crash leaves exactly one entry
        return self.client.validate_batch(self.journal.load(step))

    def _drop_stale_buffered(self, step: int) -> int:
        """Remove buffered groups older than max_policy_lag (logged by filter_stale_groups)."""
        if self.max_policy_lag is None or not len(self.group_buffer):
            return 0
        lag = filter_stale_groups(self.group_buffer.entries, self.version_registry, step - 1, self.max_policy_lag,
                                  drop_unknown=self.config.drop_unknown_version_groups)
        stale = {id(group) for group in lag.stale}
        return len(self.group_buffer.remove_if(lambda group: id(group) in stale))

    def _drop_over_buffer_bounds(self, step: int) -> int:
        """Remove buffered groups past the buffer's age and size bounds, each logged with its reason."""
        dropped = self.group_buffer.drop_over_bounds(step)
        for group, reason in dropped:
            logger.warning("dropping buffered group %d (env_id=%s, %d sequences) at step %d: %s",
                           group.group_index, group.env_id, group.size, step, reason)
        self.buffer_dropped_total += len(dropped)
        return len(dropped)

    def _fresh_batch(self, step: int) -> tuple[AtroposBatch | None, int]:
        """Exactly one step's sequences of valid, fresh-enough groups: buffered ones first, topped up
        from `/batch`; journaled (with what is left over) before use. None when Atropos gave nothing
        in time. Also returns how many stale groups were dropped."""
        polled: list[AtroposBatch] = []
        stale = 0
        self.poll_seconds["step_exposed"] = 0.0
        self.buffer_dropped_step = 0
        while True:
            stale += self._drop_stale_buffered(step)
            self.buffer_dropped_step += self._drop_over_buffer_bounds(step)
            taken = self.group_buffer.take_exact(self.sequences_per_step)
            if taken is not None:
                break
            started = time.monotonic()
            batch = self._prefetched_batch(step) if self.prefetcher is not None and self.prefetcher.pending else self._poll(step)
            self._count_poll(time.monotonic() - started, batch.wait_s if batch is not None else 0.0)
            if batch is None:
                return None, stale
            polled.append(batch)
            self.group_buffer.add(batch, step)
            for group in self.group_buffer.remove_if(lambda g: g.size > self.sequences_per_step):
                logger.error("dropping group %d (env_id=%s): %d sequences cannot fit a step of %d; "
                             "make the environment's group_size divide the batch", group.group_index, group.env_id,
                             group.size, self.sequences_per_step)
            if not batch.groups:
                logger.warning("Atropos batch at step %d had no valid group (%d invalid)", step, len(batch.invalid))
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
        return AtroposBatch.of_step(taken, polled), stale

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
        return batch

    def _prefetched_batch(self, step: int) -> AtroposBatch | None:
        """The prefetched batch; when its poll failed (server gone, registration lost), the usual path
        decides: health check, registering again, fallback."""
        try:
            batch, _ = self.prefetcher.take()
        except (AtroposUnavailableError, AtroposNotRegisteredError) as exc:
            logger.warning("prefetch poll failed (%s): polling again in the trainer", exc)
            self.registered = False
            return self._poll(step)
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
