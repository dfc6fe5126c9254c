"""`CombinedReward` weighs its sub-rewards (atroposlib pull request #485, never merged).

atroposlib 0.4.0 sums its sub-rewards' `compute()` scores, which are unweighted (a reward's weight
is applied in `RewardFunction.__call__`): the configured weights change nothing under the "none"
and "minmax" normalizations and only divide the sum under "sum". Environments built on it (the
dataset environment, `reward_funcs` with weights) train on other scores than they configured. Each
sub-reward's scores are multiplied by its weight before atroposlib's own summing and normalization.
"""

from __future__ import annotations

import functools
from typing import Any

from atroposlib.envs.reward_fns.combined_reward import CombinedReward

from recipe.atropos.envs.atropos_compat.replace_once import replace_once


class _WeightedScores:
    """A sub-reward whose `compute()` returns its scores times its weight; everything else is the sub-reward's."""

    def __init__(self, reward_fn: Any) -> None:
        self.reward_fn = reward_fn

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reward_fn, name)

    def compute(self, completions: list, **kwargs: Any) -> list[float]:
        return [score * self.reward_fn.weight for score in self.reward_fn.compute(completions, **kwargs)]


def _weighing_sub_rewards(original: Any) -> Any:
    @functools.wraps(original)
    def compute(self: CombinedReward, completions: list, **kwargs: Any) -> list[float]:
        sub_rewards = self.reward_functions
        self.reward_functions = [_WeightedScores(reward_fn) for reward_fn in sub_rewards]
        try:
            return original(self, completions, **kwargs)
        finally:
            self.reward_functions = sub_rewards

    return compute


def install() -> bool:
    """Wrap `CombinedReward.compute`; True when active."""
    return replace_once(CombinedReward, "compute", _weighing_sub_rewards)
