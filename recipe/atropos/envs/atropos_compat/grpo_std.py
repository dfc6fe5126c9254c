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

_MARK = "_atropos_compat_grpo_std"


def install() -> bool:
    """Wrap `atroposlib.utils.advantages.compute_stats` (what the GRPO helper calls); True when active."""
    original = advantages.compute_stats
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def compute_stats(data: Any) -> dict:
        stats = original(data)
        stats["var"] = max(stats["var"], 0.0)
        return stats

    setattr(compute_stats, _MARK, True)
    advantages.compute_stats = compute_stats
    return True
