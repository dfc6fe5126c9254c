"""The groups one step dropped while gathering its batch, by reason and environment.

Every way a pulled group can leave without being trained is counted here (invalid, larger than a
step, older than max_policy_lag, of unknown version, past the buffer's bounds), so the step's
metrics hold them whether the step trained, fell back or stopped, and a stop names them.
"""

from __future__ import annotations

import collections

# Reasons other than invalid fields (those are `invalid_<field or category>`).
STALE = "stale"
UNKNOWN_VERSION = "unknown_version"
OVERSIZED = "oversized"
BUFFER_AGE = "buffer_age"
BUFFER_SIZE = "buffer_size"


class StepDrops:
    """Counts of dropped groups keyed by (reason, env_id)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, object]] = collections.Counter()

    def add(self, reason: str, env_id: object, count: int = 1) -> None:
        self.counts[(reason, env_id)] += count

    def total(self, reason: str | None = None) -> int:
        return sum(count for (key, _), count in self.counts.items() if reason is None or key == reason)

    def metrics(self, env_names: dict[int, str] | None = None) -> dict[str, float]:
        """`atropos/dropped_groups` (all reasons), `.../<reason>` and `.../<reason>/<environment>`."""
        metrics = {"atropos/dropped_groups": float(self.total())}
        for (reason, env_id), count in self.counts.items():
            by_reason = f"atropos/dropped_groups/{reason}"
            metrics[by_reason] = metrics.get(by_reason, 0.0) + count
            by_env = f"{by_reason}/{_name(env_id, env_names)}"  # a restarted environment: same name, new env_id
            metrics[by_env] = metrics.get(by_env, 0.0) + count
        return metrics

    def describe(self, env_names: dict[int, str] | None = None) -> str:
        """One line for a log or an error: 'invalid_prompt_too_long: 6 (math 6); stale: 2 (gsm8k 2)'."""
        by_name: collections.Counter[tuple[str, str]] = collections.Counter()
        for (reason, env_id), count in self.counts.items():
            by_name[(reason, _name(env_id, env_names))] += count
        per_reason: dict[str, list[str]] = collections.defaultdict(list)
        for (reason, name), count in sorted(by_name.items()):
            per_reason[reason].append(f"{name} {count}")
        if not per_reason:
            return "no group was dropped"
        return "; ".join(f"{reason}: {self.total(reason)} ({', '.join(envs)})" for reason, envs in per_reason.items())


def _name(env_id: object, env_names: dict[int, str] | None) -> str:
    return (env_names or {}).get(env_id, str(env_id))
