"""RayGRPOAtroposTrainer: verl's legacy RayPPOTrainer training GRPO on batches from Atropos.

Each step takes a batch from the Atropos trajectory API (validated groups -> DataProto), or, when
Atropos is unavailable and `trainer.atropos.fallback_to_grpo` is on, generates one with verl's own
rollout on `data.train_files` (standard GRPO). Then verl's own pieces: balance, old log-probs,
reference log-probs, advantages (the Atropos rule, `AtroposGRPOComputer`, called here for Atropos
batches whatever verl_patches did; verl's GRPO for fallback batches), actor update, checkpoint,
weight sync to the rollout replicas, metrics through verl's Tracking. The Atropos logic lives in
the client, data and advantage modules.

Nothing is lost on a crash: each pulled batch is journaled (`<default_local_dir>/atropos_journal`)
before training and dropped once a checkpoint covers its step; a run that resumes the checkpoint the
journal belongs to replays the journaled batches newer than it first, then registers with
`starting_step` = the restored step. A journal of another run is moved aside, never trained.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from verl import DataProto
from verl.trainer.ppo import ray_trainer
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.metric_utils import compute_data_metrics, compute_throughout_metrics, compute_timing_metrics
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, apply_kl_penalty, compute_response_mask
from verl.trainer.ppo.reward import extract_reward
from verl.utils.debug import marked_timer
from verl.utils.metric import reduce_metrics
from verl.utils.tracking import Tracking

from recipe.atropos.advantages import META_USE_ADVANTAGES, AtroposGRPOComputer, carries_atropos_fields, check_adv_estimator
from recipe.atropos.atropos_data import fill_missing_rollout_log_probs, scored_data_to_dataproto
from recipe.atropos.atropos_integration import AtroposBatch, AtroposEnvironmentClient
from recipe.atropos.atropos_metrics import atropos_batch_metrics, load_env_names, rollout_logprob_gap
from recipe.atropos.batch_journal import BatchJournal, RunIdentity, open_journal
from recipe.atropos.batch_prefetcher import BatchPrefetcher
from recipe.atropos.client_config import AtroposClientConfig
from recipe.atropos.errors import AtroposNotRegisteredError, AtroposUnavailableError
from recipe.atropos.group_buffer import GroupBuffer
from recipe.atropos.inference_config import InferenceConfig
from recipe.atropos.inference_proxy import InferenceProxy
from recipe.atropos.inference_service import InferenceService, write_endpoint_file
from recipe.atropos.policy_lag import filter_stale_groups
from recipe.atropos.policy_versions import PolicyVersionRegistry
from recipe.atropos.row_temperature import RowTemperatureBatch
from recipe.atropos.trained_groups import TrainedGroups

logger = logging.getLogger(__name__)

# Fault injection for tests: exit (code 75) right after journaling this step's batch, before training.
FAULT_EXIT_AFTER_JOURNAL_ENV = "ATROPOS_FAULT_EXIT_AFTER_JOURNAL_STEP"


class AtroposStopError(RuntimeError):
    """Atropos gave no batch within max_wait_time and fallback_to_grpo is off."""


class RayGRPOAtroposTrainer(RayPPOTrainer):
    """GRPO on Atropos environments' rollouts through verl's Ray/FSDP workers (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("config", args[0] if args else None)
        if config is not None:  # before verl builds anything: a setting the rule cannot honour stops here
            check_adv_estimator(config.algorithm.adv_estimator)
            AtroposClientConfig.from_mapping(config.trainer.get("atropos"))
        super().__init__(*args, **kwargs)
        data_cfg = self.config.data
        self.atropos_config = AtroposClientConfig.from_mapping(self.config.trainer.get("atropos"))
        self.max_prompt_length = int(data_cfg.max_prompt_length)
        self.max_response_length = int(data_cfg.max_response_length)
        # Sequences per step, as in verl's GRPO: prompts per batch x responses per prompt.
        self.sequences_per_step = int(data_cfg.train_batch_size) * int(self.config.actor_rollout_ref.rollout.n)
        self.client = AtroposEnvironmentClient(
            self.atropos_config,
            vocab_size=len(self.tokenizer),
            max_token_len=self.max_prompt_length + self.max_response_length,
            max_prompt_len=None if self.atropos_config.allow_prompt_truncation else self.max_prompt_length,
        )
        self.registered = False
        self.registered_starting_step = -1
        self.fallback_steps = 0
        self.journal: BatchJournal | None = None  # opened in fit, once verl has restored its checkpoint
        self.replay_steps: list[int] = []
        self.resumed_step = 0
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.inference_config = InferenceConfig.from_mapping(self.config.trainer.get("atropos_inference"))
        self.max_policy_lag = self.atropos_config.max_policy_lag
        if not self.inference_config.weight_sync and self.max_policy_lag is not None:
            logger.warning("trainer.atropos_inference.weight_sync=false serves the initial weights on purpose: "
                           "trainer.atropos.max_policy_lag=%d (and drop_unknown_version_groups) is ignored "
                           "(the lag is still logged)", self.max_policy_lag)
            self.max_policy_lag = None
        self.inference: InferenceService | None = None
        self.version_registry = PolicyVersionRegistry()
        self.stale_groups_total = 0
        self.group_buffer = GroupBuffer(max_groups=self.atropos_config.max_buffered_groups,
                                        max_age_steps=self.atropos_config.max_buffer_age_steps)
        self.buffer_dropped_total = 0
        self.buffer_dropped_step = 0
        self.trained_groups = TrainedGroups()
        self.prefetch_mode = self.atropos_config.prefetch
        self.prefetcher = BatchPrefetcher(self._prefetch_poll) if self.prefetch_mode != "off" else None
        # Seconds of `/batch` polling (wherever it ran), and of it what the trainer waited for.
        self.poll_seconds = {"step_exposed": 0.0, "poll": 0.0, "exposed": 0.0, "prefetched": 0}
        # Colocated engines that free their memory for training cannot serve environments meanwhile.
        self.pause_inference_while_training = bool(self.config.actor_rollout_ref.rollout.get("free_cache_engine", False))
        # hf_cpu loads weights under the lock its generations hold (verl_patches/hf_cpu_rollout.py): a
        # sync only has to stop new requests, and the ones in flight finish while the weights travel.
        self.replica_orders_weight_loads = self.config.actor_rollout_ref.rollout.name == "hf_cpu"

    # ------------------------------------------------------------------ the policy server for environments
    def _start_inference_service(self) -> None:
        """Serve verl's rollout replicas to environments and announce the endpoint (inference_service.py)."""
        cfg = self.inference_config
        rollout = self.config.actor_rollout_ref.rollout
        proxy = InferenceProxy(
            self.llm_server_manager.server_handles,
            batched=rollout.name == "hf_cpu",
            request_wait_timeout=cfg.request_wait_timeout,
            registry=self.version_registry,
        )
        proxy.policy_version = self.global_steps
        self.inference = InferenceService(proxy, self.tokenizer, cfg.model_name, cfg.host, cfg.port)
        self.inference.start()
        path = cfg.endpoint_path(str(self.config.trainer.default_local_dir))
        model = self.config.actor_rollout_ref.model
        write_endpoint_file(path, self.inference.endpoint_record(tokenizer=str(model.get("tokenizer_path") or model.path)))
        logger.info("policy server for environments at %s (endpoint file %s)", self.inference.base_url, path)

    def _pause_inference(self, timing_raw: dict, wait: bool = True) -> None:
        if self.inference is not None and self.inference.proxy.is_open:
            with marked_timer("inference_drain", timing_raw, color="blue"):
                self.inference.pause(self.inference_config.drain_timeout, wait)

    def _sync_weights(self, timing_raw: dict) -> None:
        """Push the updated weights to the replicas while new environment requests wait at the gate
        (requests in flight are drained first, unless the replica orders weight loads itself)."""
        if self.inference_config.weight_sync:
            self._pause_inference(timing_raw, wait=not self.replica_orders_weight_loads)
            with marked_timer("update_weights", timing_raw, color="red"):
                self.checkpoint_manager.update_weights(self.global_steps)
            version = self.global_steps
        else:
            self.checkpoint_manager.wake_up_replicas()
            version = None  # still the initial weights
        if self.inference is not None:
            self.inference.resume(version)

    def _inference_metrics(self) -> dict[str, float]:
        if self.inference is None:
            return {}
        proxy = self.inference.proxy
        stats = proxy.stats
        return {
            "atropos/inference/policy_version": float(proxy.policy_version),
            "atropos/inference/requests": float(stats.requests),
            "atropos/inference/completions": float(stats.completions),
            "atropos/inference/completion_tokens": float(stats.completion_tokens),
            "atropos/inference/drain_timeouts": float(stats.drain_timeouts),
            "atropos/inference/rejected_requests": float(stats.rejected_requests),
            "atropos/inference/last_drain_s": float(stats.last_drain_s),
        }

    # ------------------------------------------------------------------ Atropos side
    def _register(self) -> AtroposBatch | None:
        """Register with the step count we resume from, then open the API to environments (its first
        `/batch`). A batch that first call returns is kept: `/batch` pops it on the server."""
        completed_steps = self.global_steps - 1
        self.client.register(
            batch_size=self.sequences_per_step,
            max_token_len=self.max_prompt_length + self.max_response_length,
            num_steps=self.total_training_steps,
            starting_step=completed_steps,
            checkpoint_dir=str(self.config.trainer.default_local_dir),
            save_checkpoint_interval=int(self.config.trainer.save_freq),
            wandb_group=str(self.config.trainer.experiment_name),
            wandb_project=str(self.config.trainer.project_name),
        )
        self.registered = True
        self.registered_starting_step = completed_steps
        return self.client.get_batch()

    def _wait_for_environments(self) -> None:
        """With a launcher's names file configured: register (which opens the API to environments) and
        wait, up to max_wait_time, until the launcher says every environment is registered, so the
        first batch is not formed from whichever environment started first."""
        names_file = self.atropos_config.env_names_file
        if not names_file or os.path.exists(names_file):
            return
        try:
            batch = self._register()
        except (AtroposUnavailableError, AtroposNotRegisteredError) as exc:
            logger.warning("not waiting for environments: %s", exc)
            return
        if batch is not None:
            self.group_buffer.add(batch, self.global_steps)
            self.journal.save_buffer(self.global_steps - 1, self.group_buffer.scored_data())
        deadline = time.monotonic() + self.atropos_config.max_wait_time
        while not os.path.exists(names_file) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not os.path.exists(names_file):
            logger.warning("environments not all registered after %.0fs (no %s): training anyway",
                           self.atropos_config.max_wait_time, names_file)

    def _poll_atropos(self) -> AtroposBatch | None:
        """A batch from Atropos, or None when it is unavailable or sent nothing in time."""
        fallback = self.atropos_config.fallback_to_grpo
        if fallback and not self.client.health():
            logger.warning("Atropos API at %s is not answering: step %d falls back to GRPO on the local dataset",
                           self.client.base_url, self.global_steps)
            self.registered = False
            return None
        try:
            if not self.registered:
                batch = self._register()
                if batch is not None and batch.groups:
                    return batch
            try:
                return self.client.poll_batch()
            except AtroposNotRegisteredError:
                logger.warning("Atropos lost its registration (restarted or reset): registering again at step %d",
                               self.global_steps - 1)
                self.registered = False
                batch = self._register()
                return batch if batch is not None and batch.groups else self.client.poll_batch()
        except AtroposUnavailableError as exc:
            self.registered = False
            if not fallback:
                raise AtroposStopError(
                    f"Atropos unavailable for {self.atropos_config.max_wait_time:.0f}s and "
                    f"trainer.atropos.fallback_to_grpo is false: stopping at step {self.global_steps}. ({exc})"
                ) from exc
            logger.warning("%s; step %d falls back to GRPO on the local dataset", exc, self.global_steps)
            return None

    def _compute_advantage(self, batch: DataProto) -> DataProto:
        """Atropos batches: the Atropos rule, called directly (it never depends on a patch having
        loaded in this process); fallback batches: verl's own GRPO."""
        algorithm = self.config.algorithm
        norm_by_std = algorithm.get("norm_adv_by_std_in_grpo", True)
        if carries_atropos_fields(batch):
            computer = AtroposGRPOComputer(norm_adv_by_std_in_grpo=norm_by_std,
                                           use_advantages=bool(batch.meta_info.get(META_USE_ADVANTAGES, True)))
            return computer.compute(batch)
        compute = getattr(ray_trainer.compute_advantage, "__wrapped_original__", ray_trainer.compute_advantage)
        return compute(batch, adv_estimator=algorithm.adv_estimator, gamma=algorithm.gamma, lam=algorithm.lam,
                       num_repeat=self.config.actor_rollout_ref.rollout.n, norm_adv_by_std_in_grpo=norm_by_std,
                       config=algorithm)

    def _atropos_dataproto(self, batch: AtroposBatch) -> DataProto:
        data = scored_data_to_dataproto(
            batch.groups,
            pad_token_id=self.pad_token_id,
            max_prompt_length=self.max_prompt_length,
            max_response_length=self.max_response_length,
            default_temperature=float(self.config.actor_rollout_ref.rollout.temperature),
        )
        data.meta_info[META_USE_ADVANTAGES] = self.atropos_config.use_advantages
        return data

    # verl's log-prob recomputation and update, each row at its own sampling temperature.
    def _compute_old_log_prob(self, batch: DataProto):  # noqa: ANN202 (verl's (DataProto, mfu))
        return super()._compute_old_log_prob(RowTemperatureBatch.view(batch))

    def _compute_ref_log_prob(self, batch: DataProto) -> DataProto:
        return super()._compute_ref_log_prob(RowTemperatureBatch.view(batch))

    def _update_actor(self, batch: DataProto) -> DataProto:
        return super()._update_actor(RowTemperatureBatch.view(batch))

    # ------------------------------------------------------------------ fallback side
    def _local_batches(self) -> Iterator[dict]:
        while True:
            yield from self.train_dataloader

    def _generate_local_batch(self, local_batches: Iterator[dict], timing_raw: dict) -> DataProto:
        """verl's standard GRPO batch: prompts from data.train_files, responses from verl's rollout."""
        batch = DataProto.from_single_dict(next(local_batches))
        batch.meta_info["temperature"] = self.config.actor_rollout_ref.rollout.temperature
        batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch.batch))], dtype=object)
        gen_batch = self._get_gen_batch(batch)
        gen_batch.meta_info["global_steps"] = self.global_steps
        n = self.config.actor_rollout_ref.rollout.n
        with marked_timer("gen", timing_raw, color="red"):
            output = self.async_rollout_manager.generate_sequences(gen_batch.repeat(repeat_times=n, interleave=True))
            timing_raw.update(output.meta_info.pop("timing", {}))
        batch = batch.repeat(repeat_times=n, interleave=True).union(output)
        if "response_mask" not in batch.batch.keys():
            batch.batch["response_mask"] = compute_response_mask(batch)
        with marked_timer("reward", timing_raw, color="yellow"):
            reward_tensor, _ = extract_reward(batch)
        batch.batch["token_level_scores"] = reward_tensor
        return batch

    # ------------------------------------------------------------------ the step
    def _replayed_batch(self) -> AtroposBatch:
        """The next journaled batch of a resumed run (it is trained as it was pulled)."""
        step = self.replay_steps.pop(0)
        logger.warning("Replaying the journaled Atropos batch of step %d as step %d", step, self.global_steps)
        self.journal.renumber(step, self.global_steps)  # one rename: a crash leaves exactly one entry
        return self.client.validate_batch(self.journal.load(self.global_steps))

    def _drop_stale_buffered(self) -> int:
        """Remove buffered groups older than max_policy_lag (logged by filter_stale_groups)."""
        if self.max_policy_lag is None or not len(self.group_buffer):
            return 0
        lag = filter_stale_groups(self.group_buffer.entries, self.version_registry,
                                  self.global_steps - 1, self.max_policy_lag,
                                  drop_unknown=self.atropos_config.drop_unknown_version_groups)
        stale = {id(group) for group in lag.stale}
        return len(self.group_buffer.remove_if(lambda group: id(group) in stale))

    def _drop_over_buffer_bounds(self) -> int:
        """Remove buffered groups past the buffer's age and size bounds, each logged with its reason."""
        dropped = self.group_buffer.drop_over_bounds(self.global_steps)
        for group, reason in dropped:
            logger.warning("dropping buffered group %d (env_id=%s, %d sequences) at step %d: %s",
                           group.group_index, group.env_id, group.size, self.global_steps, reason)
        self.buffer_dropped_total += len(dropped)
        return len(dropped)

    def _fresh_batch(self) -> tuple[AtroposBatch | None, int]:
        """Exactly one step's sequences of valid, fresh-enough groups: buffered ones first, topped up
        from `/batch`; journaled (with what is left over) before use. None when Atropos gave nothing
        in time. Also returns how many stale groups were dropped."""
        polled: list[AtroposBatch] = []
        stale = 0
        self.poll_seconds["step_exposed"] = 0.0
        self.buffer_dropped_step = 0
        while True:
            stale += self._drop_stale_buffered()
            self.buffer_dropped_step += self._drop_over_buffer_bounds()
            taken = self.group_buffer.take_exact(self.sequences_per_step)
            if taken is not None:
                break
            started = time.monotonic()
            batch = self._prefetched_batch() if self.prefetcher is not None and self.prefetcher.pending else self._poll_atropos()
            self._count_poll(time.monotonic() - started, batch.wait_s if batch is not None else 0.0)
            if batch is None:
                return None, stale
            polled.append(batch)
            self.group_buffer.add(batch, self.global_steps)
            for group in self.group_buffer.remove_if(lambda g: g.size > self.sequences_per_step):
                logger.error("dropping group %d (env_id=%s): %d sequences cannot fit a step of %d; "
                             "make the environment's group_size divide the batch", group.group_index, group.env_id,
                             group.size, self.sequences_per_step)
            if not batch.groups:
                logger.warning("Atropos batch at step %d had no valid group (%d invalid)", self.global_steps,
                               len(batch.invalid))
            # Popped on the server: kept on disk until a step's journal entry takes it over.
            self.journal.save_buffer(self.global_steps - 1, self.group_buffer.scored_data())
            self.journal.clear_prefetched()
        step_batch = AtroposBatch(
            groups=taken,
            invalid=[bad for batch in polled for bad in batch.invalid],
            received_groups=sum(batch.received_groups for batch in polled),
            payload_bytes=sum(batch.payload_bytes for batch in polled),
            wait_s=sum(batch.wait_s for batch in polled),
        )
        self.journal.record(self.global_steps, [group.to_scored_data() for group in taken])
        self.journal.save_buffer(self.global_steps, self.group_buffer.scored_data())
        if self.prefetcher is None or not self.prefetcher.pending:
            self.journal.clear_prefetched()  # its groups are in the step or the buffer now
        if self.prefetch_mode == "step":
            self._start_prefetch()
        if os.environ.get(FAULT_EXIT_AFTER_JOURNAL_ENV) == str(self.global_steps):
            logger.error("fault injection: exiting after journaling step %d", self.global_steps)
            os._exit(75)
        return step_batch, stale

    # ------------------------------------------------------------------ prefetch (batch_prefetcher.py)
    def _start_prefetch(self) -> None:
        """Poll the next step's batch in the background, when the next step will need one from the
        server (not the last step, no journaled batch to replay, the buffer cannot fill it).

        Started at the weight sync by default (`prefetch: sync`): the queue then holds what a poll at
        the next step would find, and the server's serve time overlaps the weight transfer. From the
        start of the step (`prefetch: step`) the whole poll is hidden but the batch is the one queued a
        step earlier (measured on the CPU demo: policy lag 2 instead of 1; with max_policy_lag 2, groups
        dropped and the mix skewed towards the faster environment)."""
        if (self.prefetcher is None or not self.registered or self.global_steps >= self.total_training_steps
                or self.replay_steps or self.group_buffer.can_fill(self.sequences_per_step)):
            return
        self.prefetcher.start()

    def _prefetch_poll(self, stop: threading.Event) -> AtroposBatch | None:
        """Runs in the prefetch thread: one `poll_batch`, journaled as soon as it is pulled."""
        batch = self.client.poll_batch(stop=stop)
        if batch is not None and batch.groups:
            self.journal.save_prefetched([group.to_scored_data() for group in batch.groups])
        return batch

    def _prefetched_batch(self) -> AtroposBatch | None:
        """The prefetched batch; when its poll failed (server gone, registration lost), the usual path
        decides: health check, registering again, fallback."""
        try:
            batch, _ = self.prefetcher.take()
        except (AtroposUnavailableError, AtroposNotRegisteredError) as exc:
            logger.warning("prefetch poll failed (%s): polling again in the trainer", exc)
            self.registered = False
            return self._poll_atropos()
        if batch is None:
            logger.warning("No Atropos batch within %.1fs (prefetch)", self.atropos_config.max_wait_time)
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

    def _next_batch(self, local_batches: Iterator[dict], timing_raw: dict) -> tuple[DataProto, dict[str, float]]:
        replayed = bool(self.replay_steps)
        with marked_timer("atropos_poll", timing_raw, color="blue"):
            atropos_batch, stale = (self._replayed_batch(), 0) if replayed else self._fresh_batch()
        self.stale_groups_total += stale
        stale_metrics = {"atropos/stale_groups_dropped": float(stale),
                         "atropos/stale_groups_dropped_total": float(self.stale_groups_total),
                         "atropos/buffered_groups": float(len(self.group_buffer)),
                         "atropos/buffer_dropped_groups": float(self.buffer_dropped_step),
                         "atropos/buffer_dropped_groups_total": float(self.buffer_dropped_total),
                         **self._poll_metrics()}
        if atropos_batch is not None and atropos_batch.groups:
            with marked_timer("atropos_convert", timing_raw, color="blue"):
                data = self._atropos_dataproto(atropos_batch)
            env_names = load_env_names(self.atropos_config.env_names_file)
            metrics = atropos_batch_metrics(atropos_batch, data, env_names)
            # Lag of what is trained (nothing dropped here: stale groups left the buffer already).
            metrics.update(filter_stale_groups(atropos_batch.groups, self.version_registry, self.global_steps - 1,
                                               None, env_names=env_names).metrics)
            metrics.update(stale_metrics)
            repeated = self.trained_groups.record(atropos_batch.groups)
            if repeated:
                logger.error("step %d trains %d group(s) already trained in this run", self.global_steps, repeated)
            metrics["atropos/repeated_groups_total"] = float(self.trained_groups.repeated_total)
            metrics["atropos/fallback_steps"] = float(self.fallback_steps)
            metrics["atropos/from_atropos"] = 1.0
            metrics["atropos/replayed"] = float(replayed)
            return data, metrics
        if not self.atropos_config.fallback_to_grpo:
            raise AtroposStopError(
                f"No Atropos batch within trainer.atropos.max_wait_time={self.atropos_config.max_wait_time:.0f}s and "
                f"trainer.atropos.fallback_to_grpo is false: stopping at step {self.global_steps}. The API answers, so "
                "no environment sent enough groups: see the launcher's warnings about silent environments and each "
                "environment's log.")
        self.fallback_steps += 1
        data = self._generate_local_batch(local_batches, timing_raw)
        return data, {"atropos/fallback_steps": float(self.fallback_steps), "atropos/from_atropos": 0.0, **stale_metrics}

    def _train_on_batch(self, batch: DataProto, metrics: dict, timing_raw: dict) -> DataProto:
        """verl's GRPO update on a ready batch (prompts, responses, masks, token_level_scores, uid)."""
        # Colocated rollout engines give their accelerator memory back for training.
        if self.pause_inference_while_training:
            self._pause_inference(timing_raw)
        self.checkpoint_manager.sleep_replicas()
        if self.config.trainer.balance_batch:
            self._balance_batch(batch, metrics=metrics)
        batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
        batch.meta_info.setdefault("images_seqlens", [])

        with marked_timer("old_log_prob", timing_raw, color="blue"):
            old_log_prob, old_log_prob_mfu = self._compute_old_log_prob(batch)
            actor_cfg = self.config.actor_rollout_ref.actor
            entropy = agg_loss(
                loss_mat=old_log_prob.batch["entropys"],
                loss_mask=batch.batch["response_mask"],
                loss_agg_mode=actor_cfg.loss_agg_mode,
                loss_scale_factor=actor_cfg.loss_scale_factor,
            )
            metrics.update({"actor/entropy": entropy.detach().item(), "perf/mfu/actor_infer": old_log_prob_mfu})
            old_log_prob.batch.pop("entropys")
            batch = batch.union(old_log_prob)
            metrics.update(rollout_logprob_gap(batch))
            # Rows an environment sent without inference_logprobs: their rollout log-probs are the
            # recomputed ones, so the rollout correction leaves exactly those rows alone.
            fill_missing_rollout_log_probs(batch)
        if self.use_reference_policy:
            with marked_timer("ref", timing_raw, color="olive"):
                batch = batch.union(self._compute_ref_log_prob(batch))

        with marked_timer("adv", timing_raw, color="brown"):
            if self.config.algorithm.use_kl_in_reward:
                batch, kl_metrics = apply_kl_penalty(batch, kl_ctrl=self.kl_ctrl_in_reward,
                                                     kl_penalty=self.config.algorithm.kl_penalty)
                metrics.update(kl_metrics)
            else:
                batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]
            rollout_corr = self.config.algorithm.get("rollout_correction", None)
            if rollout_corr is not None and "rollout_log_probs" in batch.batch.keys():
                from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

                batch, is_metrics = compute_rollout_correction_and_add_to_batch(batch, rollout_corr)
                metrics.update(is_metrics)
            batch = self._compute_advantage(batch)

        with marked_timer("update_actor", timing_raw, color="red"):
            actor_output = self._update_actor(batch)
        metrics.update(reduce_metrics(actor_output.meta_info["metrics"]))

        save_freq = self.config.trainer.save_freq
        if save_freq > 0 and (self.global_steps >= self.total_training_steps or self.global_steps % save_freq == 0):
            with marked_timer("save_checkpoint", timing_raw, color="green"):
                self.journal.mark_checkpoint(self._checkpoint_folder(self.global_steps), self.global_steps)
                self._save_checkpoint()
            self.journal.checkpoint_saved(self.global_steps)
            self.journal.covered(self.global_steps)
        elif save_freq <= 0:
            self.journal.covered(self.global_steps)  # no checkpoint could replay it: the journal only bridges a crash mid-step
        if self.prefetch_mode == "sync":
            self._start_prefetch()
        self._sync_weights(timing_raw)
        return batch

    def _checkpoint_folder(self, step: int) -> str:
        """Where verl's `_save_checkpoint` writes (and `_load_checkpoint` reads) step `step`."""
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path" and step == self.resumed_step:
            return os.path.abspath(str(trainer.resume_from_path))
        return os.path.join(os.path.abspath(str(trainer.default_local_dir)), f"global_step_{step}")

    def _open_journal(self) -> None:
        """The journal of the checkpoint verl restored, or a fresh one (batch_journal.open_journal)."""
        trainer = self.config.trainer
        self.resumed_step = self.global_steps
        self.journal, _ = open_journal(
            os.path.join(str(trainer.default_local_dir), "atropos_journal"),
            RunIdentity(project=str(trainer.project_name), experiment=str(trainer.experiment_name),
                        resume_mode=str(trainer.resume_mode), resumed_step=self.global_steps,
                        checkpoint_folder=self._checkpoint_folder(self.global_steps) if self.global_steps else None),
        )

    def fit(self) -> None:
        tracking = Tracking(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=self.config.trainer.logger,
            config=OmegaConf.to_container(self.config, resolve=True),
        )
        self.global_steps = 0
        self._load_checkpoint()
        self._open_journal()
        self.replay_steps = self.journal.pending(after_step=self.global_steps)
        buffered = self.journal.load_buffer()
        if buffered:
            self.group_buffer.add(self.client.validate_batch(buffered), self.global_steps)
            logger.warning("Resuming with %d pulled but untrained Atropos group(s) from the journal", len(self.group_buffer))
            self.journal.save_buffer(self.global_steps, self.group_buffer.scored_data())
            self.journal.clear_prefetched()
        self.journal.covered(self.global_steps)
        if self.replay_steps:
            logger.warning("Resuming at step %d: %d journaled Atropos batch(es) to train first: steps %s",
                           self.global_steps, len(self.replay_steps), self.replay_steps)
        self.checkpoint_manager.update_weights(self.global_steps)
        if self.inference_config.enable:
            self._start_inference_service()
        if self.config.trainer.get("val_before_train", True):
            # verl's own validation on data.val_files with verl's reward function, as verl's fit runs it.
            val_metrics = self._validate()
            logger.info("validation before training: %s", val_metrics)
            tracking.log(data=val_metrics, step=self.global_steps)
            if self.config.trainer.get("val_only", False):
                if self.inference is not None:
                    self.inference.stop()
                return
        progress = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="Atropos GRPO")
        self.global_steps += 1
        self._wait_for_environments()
        local_batches = self._local_batches()
        try:
            while self.global_steps <= self.total_training_steps:
                metrics: dict[str, float] = {}
                timing_raw: dict[str, float] = {}
                with marked_timer("step", timing_raw):
                    batch, source_metrics = self._next_batch(local_batches, timing_raw)
                    metrics.update(source_metrics)
                    batch = self._train_on_batch(batch, metrics, timing_raw)
                    test_freq = self.config.trainer.test_freq
                    if test_freq > 0 and (self.global_steps >= self.total_training_steps
                                          or self.global_steps % test_freq == 0):
                        with marked_timer("testing", timing_raw, color="green"):
                            metrics.update(self._validate())
                metrics["training/global_step"] = self.global_steps
                metrics["atropos/invalid_groups_total"] = float(self.client.stats.invalid_groups)
                metrics["atropos/batch_requests_failed_after_send_total"] = float(
                    self.client.stats.batch_requests_failed_after_send)
                metrics["atropos/registered_starting_step"] = float(self.registered_starting_step)
                metrics.update(self._inference_metrics())
                metrics.update(compute_data_metrics(batch=batch, use_critic=self.use_critic))
                metrics.update(compute_timing_metrics(batch=batch, timing_raw=timing_raw))
                metrics.update(compute_throughout_metrics(batch=batch, timing_raw=timing_raw,
                                                          n_gpus=self.resource_pool_manager.get_n_gpus()))
                tracking.log(data=metrics, step=self.global_steps)
                progress.set_postfix(score=f"{metrics.get('critic/score/mean', float('nan')):.3f}",
                                     source="atropos" if metrics["atropos/from_atropos"] else "local")
                progress.update(1)
                self.global_steps += 1
        finally:
            progress.close()
            if self.prefetcher is not None:
                # A batch it pulled stays journaled (prefetched.json) for a resumed run.
                self.prefetcher.close(timeout=self.atropos_config.timeout)
            if self.inference is not None:
                self.inference.stop()
