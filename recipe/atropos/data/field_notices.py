"""Log lines said once per environment: what the trainer leaves out of a field an environment sends
(so a setting that turns a field off, or a field the recipe cannot honour, is said, not silent)."""

from __future__ import annotations

import logging

from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.data.sampling_params import truncating_parameters
from recipe.atropos.data.scored_group import ScoredGroup

logger = logging.getLogger(__name__)


class OncePerEnvironment:
    """Each (environment, subject) is logged the first time only."""

    def __init__(self) -> None:
        self.said: set[tuple[str, str]] = set()

    def say(self, environment: str, subject: str, message: str) -> bool:
        """Log `message` about `environment` unless this subject was said for it before; whether it was logged."""
        if (environment, subject) in self.said:
            return False
        self.said.add((environment, subject))
        logger.warning("environment %s: %s", environment, message)
        return True


def left_out(group: ScoredGroup, settings: AtroposClientConfig, uses_reference: bool) -> list[tuple[str, str]]:
    """(subject, message) for each field of `group` that the settings leave out of training, or that
    verl cannot honour; `uses_reference`: a KL term compares against reference log-probs."""
    notes = []
    if group.teacher is not None and settings.distill_loss_coef == 0:
        notes.append(("distill", "sends a teacher's top-k (distill_token_ids / distill_logprobs), left out of "
                                 "training by trainer.atropos.distill_loss_coef=0"))
    if group.sft_rows is not None and settings.sft_loss_coef == 0:
        notes.append(("sft", "marks rows for supervised learning (overrides sft), trained as GRPO rows instead "
                             "since trainer.atropos.sft_loss_coef=0"))
    if group.ref_logprobs is not None and not (settings.use_env_ref_logprobs and uses_reference):
        why = ("trainer.atropos.use_env_ref_logprobs=false" if not settings.use_env_ref_logprobs else
               "no reference is used (actor.use_kl_loss and algorithm.use_kl_in_reward are off)")
        notes.append(("ref_logprobs", f"sends ref_logprobs, ignored: {why}"))
    truncating, _ = truncating_parameters(group)
    if truncating:
        notes.append(("truncated_sampling", f"samples with {truncating}, which verl's log-prob recomputation does not "
                                            "apply (full softmax at the row's temperature): the PPO ratio and the "
                                            "rollout correction compare different distributions for its rows"))
    return notes
