"""Sampling parameters an environment states that verl's log-prob recomputation does not apply.

verl recomputes each row's log-probs from the full softmax at the row's temperature. A row sampled
with `top_p` < 1, `top_k` > 0 or `min_p` > 0 came from a truncated distribution, so the PPO ratio and
the rollout correction compare two different distributions. Nothing is dropped for it: the trainer
says so once per environment and counts the rows (`atropos/rows_with_truncated_sampling`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from recipe.atropos.data.scored_group import ScoredGroup

# name -> whether a value truncates the distribution (1.0, -1, 0 and null are the samplers' "off").
TRUNCATING = {
    "top_p": lambda value: value < 1.0,
    "top_k": lambda value: value > 0,
    "min_p": lambda value: value > 0.0,
}


def _stated(source: Any) -> Iterator[tuple[str, float]]:
    if isinstance(source, Mapping):
        for name, truncates in TRUNCATING.items():
            value = source.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and truncates(value):
                yield name, value


def truncating_parameters(group: ScoredGroup) -> tuple[dict[str, float], int]:
    """The truncating parameters `group` states (generation_params, group_overrides, overrides[i]), the
    first value of each, and how many of its rows they apply to."""
    found: dict[str, float] = {}
    group_wide = dict(_stated(group.generation_params)) | dict(_stated(group.group_overrides))
    found.update(group_wide)
    rows = group.size if group_wide else 0
    for item in group.overrides or ():
        own = dict(_stated(item))
        for name, value in own.items():
            found.setdefault(name, value)
        rows += bool(own) and not group_wide
    return found, rows
