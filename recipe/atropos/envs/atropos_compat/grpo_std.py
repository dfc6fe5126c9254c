"""GRPO's standard deviation of constant float rewards is 0, not a complex number (atroposlib pull
request #481, never merged).

`compute_stats` computes the variance as E[x^2] - E[x]^2, which rounding can make slightly negative
for constant float rewards (seven rewards of -0.3); `compute_grpo_process_supervision_advantages`
then takes its square root, a complex number, and its documented check `std < std_tol` raises a
TypeError instead of the ValueError an environment may handle. The variance is clamped at 0.
"""

from __future__ import annotations

import functools
from typing import Any

from atroposlib.utils import advantages

from recipe.atropos.envs.atropos_compat.replace_once import replace_once


def _clamped_variance(original: Any) -> Any:
    @functools.wraps(original)
    def compute_stats(data: Any) -> dict:
        stats = original(data)
        stats["var"] = max(stats["var"], 0.0)
        return stats

    return compute_stats


def install() -> bool:
    """Wrap `atroposlib.utils.advantages.compute_stats` (what the GRPO helper calls); True when active."""
    return replace_once(advantages, "compute_stats", _clamped_variance)
