"""What each environment has sent, and which ones are alive but silent.

An environment whose own filters drop every group (all rollouts failed, `ensure_scores_are_not_same`
on a model too weak for the task, groups longer than its `max_token_length`) or whose posts fail
stays alive and registered while the trainer sees nothing from it. Per environment the launcher
reads the groups it has queued now (`GET /status-env`, `self_queue_size`) and the groups trained
from it (the trainer's `atropos/env_groups/<name>` per step); one that has neither queued nor been
trained anything new for `silent_after` seconds is named in a warning with the likely causes,
again every `silent_after` seconds while it stays silent.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Mapping

from recipe.atropos.launcher.environment_manager import EnvSlot, status_env

TRAINED_PREFIX = "atropos/env_groups/"


def queued_groups(api_url: str, env_id: int, headers: Mapping[str, str] | None = None) -> int:
    """Groups of environment `env_id` in the API's queue now; 0 when the API does not say."""
    status = status_env(api_url, env_id, timeout=2.0, headers=headers) or {}
    try:
        return int(status.get("self_queue_size", 0))
    except (TypeError, ValueError):
        return 0


def trained_groups(step_metrics: Iterable[Mapping[str, float]]) -> collections.Counter:
    """Groups trained per environment name over the run's steps so far."""
    totals: collections.Counter = collections.Counter()
    for metrics in step_metrics:
        for key, value in metrics.items():
            if key.startswith(TRAINED_PREFIX):
                totals[key.removeprefix(TRAINED_PREFIX)] += int(value)
    return totals


@dataclasses.dataclass
class _Seen:
    queued: int = 0
    trained: int = 0
    last_progress: float = 0.0
    last_warning: float | None = None


class EnvActivityMonitor:
    def __init__(self, api_url: str, silent_after: float, api_headers: Mapping[str, str] | None = None) -> None:
        self.api_url = api_url
        self.api_headers = dict(api_headers or {})
        self.silent_after = silent_after  # seconds; 0 turns the warning off
        self.seen: dict[str, _Seen] = {}

    def update(self, slots: Iterable[EnvSlot], step_metrics: Iterable[Mapping[str, float]],
               now: float | None = None) -> list[str]:
        """Take in the environment processes and the step metrics so far; the warnings due now (one per
        silent environment, at most every `silent_after` seconds)."""
        now = time.monotonic() if now is None else now
        trained = trained_groups(step_metrics)
        by_name: dict[str, list[EnvSlot]] = collections.defaultdict(list)
        for slot in slots:
            by_name[slot.spec.name].append(slot)
        warnings = []
        for name, processes in by_name.items():
            queued = sum(queued_groups(self.api_url, slot.env_id, self.api_headers) for slot in processes)
            running = [slot for slot in processes if slot.process.running()]
            seen = self.seen.setdefault(name, _Seen(last_progress=now))
            if queued > 0 or trained[name] > seen.trained or not running:
                seen.last_progress = now
            seen.queued, seen.trained = queued, trained[name]
            silent_for = now - seen.last_progress
            due = seen.last_warning is None or now - seen.last_warning >= self.silent_after
            if self.silent_after > 0 and silent_for >= self.silent_after and due:
                seen.last_warning = now
                logs = ", ".join(str(slot.process.log_path) for slot in running)
                warnings.append(
                    f"environment {name} (env_id {', '.join(str(slot.env_id) for slot in running)}) is alive but has "
                    f"sent nothing for {silent_for:.0f}s (0 groups queued, {trained[name]} trained so far). Likely "
                    "causes: its own filters drop every group (all rollouts failed, identical scores with "
                    "ensure_scores_are_not_same, groups longer than its max_token_length: the model may be too "
                    f"weak for the task), or its posts to the API fail: see its log ({logs})")
        return warnings

    def summary(self) -> str:
        """`name queued/trained` groups per environment, for the status line."""
        return ", ".join(f"{name} {seen.queued}/{seen.trained}" for name, seen in self.seen.items())
