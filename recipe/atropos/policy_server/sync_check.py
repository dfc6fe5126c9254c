"""After a weight sync: does the policy server serve the weights the actor just trained?

A fixed prompt (the first row of the first trained batch) is decoded greedily through the policy
server, the path environments take, and the actor recomputes the log-probs of the served tokens.
After a correct sync the two agree to numerical noise (about 1e-6 with both in fp32; verl's default
bf16 actor against an fp32 rollout, about 3e-2); a replica that kept its old weights, or loaded them
wrongly, shows as a gap that grows with training. The first served token's log-prob (its context is the prompt
alone) moves whenever the served weights move.

Metrics (`trainer.atropos_inference.sync_check_tokens` > 0): `atropos/sync_check/logprob_gap_max`,
`logprob_gap_mean`, `first_token_logprob`, `policy_version` (what the served completion is tagged
with) and `tokens`. `sync_check_max_gap` stops the run when the gap exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from verl import DataProto

from recipe.atropos.data.scored_group import PROMPT_LABEL, ScoredGroup
from recipe.atropos.policy_server.proxy import Completion

PREFIX = "atropos/sync_check/"


class WeightSyncCheckError(RuntimeError):
    """The served policy's log-probs differ from the actor's by more than sync_check_max_gap."""


def first_prompt(data: DataProto) -> list[int]:
    """The unpadded prompt token ids of the batch's first row."""
    prompts = data.batch["prompts"]
    attended = data.batch["attention_mask"][0, : prompts.shape[1]].bool()
    return [int(t) for t in prompts[0][attended]]


def probe_group(prompt_ids: list[int], completion_ids: list[int], rows: int) -> ScoredGroup:
    """`rows` copies of prompt + completion as a group, for verl's log-prob recomputation (the actor's
    worker group takes a multiple of its world size)."""
    sequence = np.asarray(prompt_ids + completion_ids, dtype=np.int64)
    mask = np.concatenate([np.full(len(prompt_ids), PROMPT_LABEL, dtype=np.int64), sequence[len(prompt_ids):]])
    return ScoredGroup(
        uid="atropos-sync-check", group_index=0, env_id=None,
        lengths=np.full(rows, sequence.shape[0], dtype=np.int64), tokens=np.tile(sequence, rows),
        masks=np.tile(mask, rows), scores=np.zeros(rows), advantages=None, inference_logprobs=None,
        zero_advantage=np.zeros(rows, dtype=bool), temperatures=np.ones(rows))


class WeightSyncCheck:
    """Runs the check of the module docstring once per weight sync.

    Args:
        max_tokens: greedy tokens served per check (at most the response length).
        max_gap: the largest |served - recomputed| log-prob that does not stop the run; None: never stop.
    """

    def __init__(self, max_tokens: int, max_gap: float | None) -> None:
        self.max_tokens = max_tokens
        self.max_gap = max_gap
        self.prompt_ids: list[int] | None = None

    def run(self, batch: DataProto, generate: Callable[[list[int], dict[str, Any]], Completion],
            recompute: Callable[[list[int], list[int]], np.ndarray]) -> dict[str, float]:
        """`generate(prompt_ids, sampling_params)`: one completion through the policy server;
        `recompute(prompt_ids, completion_ids)`: the actor's log-probs of the completion tokens."""
        if self.prompt_ids is None:
            self.prompt_ids = first_prompt(batch)
        completion = generate(self.prompt_ids, {"temperature": 0.0, "max_tokens": self.max_tokens})
        if not completion.token_ids:
            return {f"{PREFIX}tokens": 0.0, f"{PREFIX}policy_version": float(completion.policy_version)}
        served = np.asarray(completion.logprobs, dtype=np.float64)
        recomputed = np.asarray(recompute(self.prompt_ids, completion.token_ids), dtype=np.float64)[: served.shape[0]]
        gap = np.abs(served - recomputed)
        metrics = {
            f"{PREFIX}logprob_gap_max": float(gap.max()),
            f"{PREFIX}logprob_gap_mean": float(gap.mean()),
            f"{PREFIX}first_token_logprob": float(served[0]),
            f"{PREFIX}policy_version": float(completion.policy_version),
            f"{PREFIX}tokens": float(served.shape[0]),
        }
        if self.max_gap is not None and metrics[f"{PREFIX}logprob_gap_max"] > self.max_gap:
            raise WeightSyncCheckError(
                f"after the weight sync to policy version {completion.policy_version} the served log-probs differ "
                f"from the actor's by up to {metrics[f'{PREFIX}logprob_gap_max']:.3g} (mean {metrics[f'{PREFIX}logprob_gap_mean']:.3g}) "
                f"over {served.shape[0]} greedy tokens, more than trainer.atropos_inference.sync_check_max_gap="
                f"{self.max_gap}: the rollout replicas are not serving the trained weights")
        return metrics
