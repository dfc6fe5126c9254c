"""Every `atropos/*` metric the recipe logs: what it means, its unit, and what a healthy value is.

docs/metrics.md is generated from this list (scripts/gen_reference_docs.py); a test fails when the
code logs a metric this list does not name, or this list names one the code no longer logs. In a
name, `<env>` is an environment's name (its env_id without the launcher's names file), `<field>` the
ScoredData field a group was dropped for, `<reason>` a drop reason.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class MetricDoc:
    name: str
    unit: str
    meaning: str
    healthy: str
    section: str


def _section(title: str, *entries: tuple[str, str, str, str]) -> list[MetricDoc]:
    return [MetricDoc(name, unit, meaning, healthy, title) for name, unit, meaning, healthy in entries]


STEP = "The step's batch"
GATHERING = "Gathering the step: drops, buffer, polling"
LAG = "Policy versions and lag"
FIELDS = "What the environments sent besides scores"
RUN = "Totals since the trainer started"
SERVER = "The policy server environments call (trainer.atropos_inference)"
SYNC = "The weight-sync check (trainer.atropos_inference.sync_check_tokens > 0)"

METRICS: list[MetricDoc] = [
    *_section(
        STEP,
        ("atropos/from_atropos", "0 or 1", "1 when the step trained an Atropos batch, 0 for a fallback step on the "
         "local dataset", "1 on every step; 0 means the API gave no usable batch in time"),
        ("atropos/batch_groups", "groups", "groups trained this step",
         "data.train_batch_size x rollout.n / the environments' group_size"),
        ("atropos/total_sequences", "sequences", "sequences trained this step",
         "exactly data.train_batch_size x actor_rollout_ref.rollout.n"),
        ("atropos/mean_score", "score", "mean environment score of the trained sequences",
         "rises as the policy learns; its scale is the environments'"),
        ("atropos/identical_score_rate", "fraction", "share of groups whose scores all tie (GRPO gives them no "
         "signal)", "well below 1; near 1 means the task is too hard or too easy for the policy"),
        ("atropos/override_fraction", "fraction", "share of rows whose advantages the environment sent "
         "(ScoredData.advantages, trainer.atropos.use_advantages)", "what the environments send; 0 without them"),
        ("atropos/zeroed_fraction", "fraction", "share of rows marked set_advantage_to_zero (overrides)",
         "what the environments send"),
        ("atropos/invalid_groups", "groups", "groups of this step's /batch answers dropped by validation "
         "(each logged naming the group and field)", "0; see atropos/invalid/<field>"),
        ("atropos/invalid/<field>", "groups", "groups dropped by validation, by the field that failed (also "
         "prompt_too_long, response_too_long, images, temperature)",
         "0; a steady count names an environment sending malformed groups or a too-small length limit"),
        ("atropos/poll_wait_s", "s", "time spent polling /batch for this step",
         "small next to timing_s/step; large means the environments are slower than the trainer"),
        ("atropos/avg_response_length", "tokens", "mean response length of the trained rows",
         "below data.max_response_length"),
        ("atropos/truncated_prompts", "rows", "rows whose prompt was cut (trainer.atropos.allow_prompt_truncation)",
         "0 unless truncation is allowed"),
        ("atropos/truncated_responses", "rows", "rows whose response was cut "
         "(trainer.atropos.allow_response_truncation)", "0 unless truncation is allowed"),
        ("atropos/payload_mb", "MB", "size of the /batch answers this step read", "grows with batch and length"),
        ("atropos/env_share/<env>", "fraction", "share of the step's sequences from each environment",
         "close to the environments' weights (the launcher's enforce_mix)"),
        ("atropos/env_groups/<env>", "groups", "groups trained from each environment this step",
         "> 0 for every environment over a few steps; the launcher warns about silent ones"),
        ("atropos/env_mean_score/<env>", "score", "mean score of each environment's trained sequences",
         "rises as the policy learns that task"),
        ("atropos/env_identical_score_rate/<env>", "fraction", "share of each environment's groups whose scores "
         "all tie", "well below 1"),
        ("atropos/replayed", "0 or 1", "1 when the step trained a journaled batch after a restart",
         "1 only on the first steps after a resume"),
    ),
    *_section(
        GATHERING,
        ("atropos/dropped_groups", "groups", "every group the step dropped while gathering its batch, all reasons",
         "0 or small; see the reasons below"),
        ("atropos/dropped_groups/<reason>", "groups", "dropped groups by reason: invalid_<field>, stale, "
         "unknown_version, oversized, buffer_age, buffer_size", "0 or small"),
        ("atropos/dropped_groups/<reason>/<env>", "groups", "dropped groups by reason and environment",
         "0 or small"),
        ("atropos/stale_groups_dropped", "groups", "groups dropped as older than trainer.atropos.max_policy_lag "
         "(or of unknown version with drop_unknown_version_groups)",
         "0 or small; a steady count means the environments run far ahead of the trainer"),
        ("atropos/buffered_groups", "groups", "groups kept for the next step (a step takes exactly its batch size)",
         "small; it grows when group sizes do not divide the batch"),
        ("atropos/buffer_dropped_groups", "groups", "buffered groups dropped as too old or over the buffer's size "
         "(trainer.atropos.max_buffer_age_steps, max_buffered_groups)", "0"),
        ("atropos/poll_exposed_wait_s", "s", "the part of the poll the step waited for (prefetch hides the rest)",
         "near 0 with prefetch when environments keep up"),
        ("atropos/poll_hidden_share", "fraction", "share of all polling so far that ran while steps trained",
         "near 1 with prefetch"),
        ("atropos/prefetched_batches_total", "batches", "batches the background poll pulled so far",
         "about one per step with prefetch; 0 with prefetch off"),
    ),
    *_section(
        LAG,
        ("atropos/policy_lag_mean", "updates", "mean number of weight updates between the policy that generated "
         "a trained group and the one trained", "0 to 1 on-policy; bounded by trainer.atropos.max_policy_lag"),
        ("atropos/policy_lag_max", "updates", "largest lag among the trained groups",
         "at most trainer.atropos.max_policy_lag"),
        ("atropos/policy_version_min", "step", "oldest policy version among the trained groups",
         "close to the current step"),
        ("atropos/policy_version_unknown_groups", "groups", "trained groups whose completions the policy server "
         "did not serve (their version is unknown)", "0 when every environment generates through the policy server"),
        ("atropos/policy_version_unknown_share/<env>", "fraction", "share of each environment's groups of unknown "
         "version", "0; 1 means that environment uses another inference server"),
    ),
    *_section(
        FIELDS,
        ("atropos/rows_without_logprobs", "rows", "rows sent without inference_logprobs (verl's rollout correction "
         "leaves them alone)", "0 for environments that send the sampler's log-probs"),
        ("atropos/rollout_logprob_gap_max", "nats", "largest |recomputed old log-prob - sampler's log-prob| over the "
         "rows that sent inference_logprobs", "numerical noise on-policy (about 1e-3 in fp32, 3e-2 bf16 vs fp32)"),
        ("atropos/rollout_logprob_gap_mean", "nats", "the mean of that gap", "numerical noise on-policy"),
        ("atropos/sampling_temperature_min", "temperature", "lowest sampling temperature of the trained rows "
         "(log-probs are recomputed at each row's own)", "what the environments sample at"),
        ("atropos/sampling_temperature_max", "temperature", "highest sampling temperature of the trained rows",
         "what the environments sample at"),
        ("atropos/rows_at_default_temperature", "rows", "rows whose group stated no temperature "
         "(actor_rollout_ref.rollout.temperature is assumed)", "0 when environments state theirs"),
        ("atropos/rows_with_truncated_sampling", "rows", "rows sampled with top_p < 1, top_k > 0 or min_p > 0, which "
         "verl's log-prob recomputation does not apply", "0; otherwise the PPO ratio compares different distributions"),
        ("atropos/distill_rows", "rows", "rows whose group sent a teacher's top-k (distill_token_ids / "
         "distill_logprobs)", "what the environments send"),
        ("atropos/distill_tokens", "tokens", "response tokens that carry the teacher's top-k into the distillation "
         "loss", "what the environments send"),
        ("atropos/sft_rows", "rows", "rows learnt by the supervised loss (overrides sft)",
         "what the environments send; 0 with trainer.atropos.sft_loss_coef=0"),
    ),
    *_section(
        RUN,
        ("atropos/invalid_groups_total", "groups", "groups dropped by validation since the trainer started", "0"),
        ("atropos/dropped_groups_total", "groups", "groups dropped while gathering, since the trainer started",
         "0 or small"),
        ("atropos/stale_groups_dropped_total", "groups", "stale groups dropped since the trainer started",
         "0 or small"),
        ("atropos/buffer_dropped_groups_total", "groups", "buffered groups dropped since the trainer started", "0"),
        ("atropos/batch_requests_failed_after_send_total", "requests", "/batch requests that failed after reaching "
         "the server (what they popped may be lost)", "0; anything else is worth a look"),
        ("atropos/repeated_groups_total", "groups", "groups trained twice (by the uid a group gets when pulled)",
         "0; anything else is a bug"),
        ("atropos/fallback_steps", "steps", "fallback steps trained on the local dataset so far",
         "0; > 0 means API outages (trainer.atropos.fallback_to_grpo)"),
        ("atropos/registered_starting_step", "step", "the starting_step the trainer registered with",
         "0 for a new run, the resumed step after a resume"),
    ),
    *_section(
        SERVER,
        ("atropos/inference/policy_version", "step", "policy version (global step) the server serves",
         "the current step with weight_sync on; 0 throughout without"),
        ("atropos/inference/requests", "requests", "requests served so far", "grows every step"),
        ("atropos/inference/completions", "completions", "completions served so far", "grows every step"),
        ("atropos/inference/completion_tokens", "tokens", "completion tokens served so far", "grows every step"),
        ("atropos/inference/completions_while_training", "completions", "completions the environments got while "
         "the step trained (from its batch to its weight sync)", "above 0 where the replicas serve during "
         "training (hf_cpu, vLLM on CPU, the separated topology); 0 with colocated engines that free their memory"),
        ("atropos/inference/drain_timeouts", "syncs", "weight syncs that went ahead before requests in flight "
         "finished (trainer.atropos_inference.drain_timeout)", "0"),
        ("atropos/inference/straddled_completions", "completions", "completions decoded across a weight sync "
         "after a drain timeout", "0"),
        ("atropos/inference/cache_resets", "resets", "replica cache resets after such syncs", "0"),
        ("atropos/inference/rejected_requests", "requests", "requests answered 503 after waiting "
         "request_wait_timeout at a weight sync", "0"),
        ("atropos/inference/last_drain_s", "s", "how long the last weight sync waited for requests in flight",
         "small next to timing_s/step"),
        ("atropos/inference/validation_hold_s", "s", "time the environments' new requests were held at the policy "
         "server while verl's validation ran (trainer.atropos_inference.hold_during_validation), so far",
         "about the validations' duration (timing_s/testing); 0 without validation"),
        ("atropos/inference/refused_requests", "requests", "requests refused (no token, too large, over a limit)",
         "0 from the run's own environments"),
        ("atropos/inference/refused_requests/<reason>", "requests", "refused requests by reason: unauthorized, "
         "too_large, over_limit", "0; unauthorized counts callers without the run's token"),
        ("atropos/inference/admission/held_requests", "requests", "environments' requests held for room in the "
         "admission window so far (trainer.atropos_inference.admission_control)", "grows while environments run ahead"),
        ("atropos/inference/admission/held_s", "s", "those requests' waits, summed", "grows with held_requests"),
        ("atropos/inference/admission/released_starved", "requests", "requests admitted in the room the trainer's "
         "wait for data added (a step's sequences per admission_starved_grace_s waited)", "0 or small; steady growth "
         "means completions are lost on the way (groups environments discard) or groups need several requests"),
        ("atropos/inference/admission/released_max_hold", "requests", "held requests let through after "
         "request_wait_timeout", "0"),
        ("atropos/inference/admission/outstanding", "completions", "completions admitted at versions still inside "
         "the window and not pulled by the trainer yet", "at most capacity"),
        ("atropos/inference/admission/outstanding/<environment>", "completions", "of those, the environment's "
         "(with trainer.atropos_inference.admission_shares, which the launcher sets)", "at most its share of capacity"),
        ("atropos/inference/admission/capacity", "completions", "the window: max_policy_lag (at least 1) x sequences "
         "per step", "constant"),
    ),
    *_section(
        SYNC,
        ("atropos/sync_check/logprob_gap_max", "nats", "largest gap between the served and the actor's log-probs "
         "of a greedy completion after the sync", "about 1e-6 fp32 on both sides, 3e-2 bf16 actor vs fp32 rollout; "
         "growing means the server kept old weights"),
        ("atropos/sync_check/logprob_gap_mean", "nats", "the mean of that gap", "as above"),
        ("atropos/sync_check/first_token_logprob", "nats", "the served log-prob of the completion's first token",
         "moves whenever the served weights move"),
        ("atropos/sync_check/policy_version", "step", "version the served completion is tagged with",
         "the step just trained"),
        ("atropos/sync_check/tokens", "tokens", "tokens compared", "trainer.atropos_inference.sync_check_tokens"),
    ),
    *_section(
        "Samples",
        ("atropos/samples", "table", "a few trained groups per step as text (wandb table; also "
         "<trainer.default_local_dir>/atropos_samples.jsonl)", "trainer.atropos.sample_groups_per_step groups"),
    ),
]

_PLACEHOLDER = re.compile(r"<[a-z]+>")


def name_pattern(name: str) -> str:
    """A regular expression for the logged names of a catalog name (each <...> is one path part)."""
    out, position = [], 0
    for match in _PLACEHOLDER.finditer(name):
        out.append(re.escape(name[position:match.start()]))
        out.append("[^/]+")
        position = match.end()
    out.append(re.escape(name[position:]))
    return "".join(out)


def documented(metric: str) -> MetricDoc | None:
    """The catalog entry a logged metric name falls under; None when it has none."""
    for doc in METRICS:
        if re.fullmatch(name_pattern(doc.name), metric):
            return doc
    return None
