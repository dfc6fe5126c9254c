"""Per-step cost of the integration in a finished run, from its metrics file (the launcher's
`metrics.jsonl`, one JSON object per step as verl's console tracking logs them).

Integration overhead: what our code adds to the trainer's step besides waiting for environments:
the poll step minus the time the trainer waited for `/batch` (journal writes, the group buffer,
stale filtering, decoding when not prefetched), the DataProto conversion, the advantage step
(verl's GRPO with our override rule), and draining the policy server. Also reported: the wait for
`/batch` the trainer saw, and the share of all polling that ran while a step trained (prefetch).

    .venv/bin/python scripts/bench_step_overhead.py outputs/demo/metrics.jsonl --skip 1 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.launcher.services import read_step_metrics  # noqa: E402

OVERHEAD_TIMERS = ("timing_s/atropos_convert", "timing_s/adv", "timing_s/inference_drain")


def step_figures(step: dict[str, float]) -> dict[str, float]:
    exposed = step.get("atropos/poll_exposed_wait_s", step.get("atropos/poll_wait_s", 0.0))
    in_poll = max(0.0, step.get("timing_s/atropos_poll", 0.0) - exposed)
    overhead = in_poll + sum(step.get(name, 0.0) for name in OVERHEAD_TIMERS)
    return {"step_s": step["timing_s/step"], "overhead_s": overhead, "exposed_wait_s": exposed,
            "poll_s": step.get("atropos/poll_wait_s", 0.0)}


def summarize(steps: list[dict[str, float]]) -> dict[str, float]:
    figures = [step_figures(step) for step in steps]
    total_step = sum(f["step_s"] for f in figures)
    total_poll = sum(f["poll_s"] for f in figures)
    total_exposed = sum(f["exposed_wait_s"] for f in figures)
    return {
        "steps": len(figures),
        "median_step_s": round(statistics.median(f["step_s"] for f in figures), 3),
        "median_overhead_ms": round(1000 * statistics.median(f["overhead_s"] for f in figures), 2),
        "overhead_share_of_step": round(sum(f["overhead_s"] for f in figures) / total_step, 5),
        "exposed_wait_share_of_step": round(total_exposed / total_step, 4),
        "poll_hidden_share": round(max(0.0, 1 - total_exposed / total_poll), 4) if total_poll > 0 else 0.0,
        "prefetched_batches": int(steps[-1].get("atropos/prefetched_batches_total", 0)),
        "mean_policy_lag": round(statistics.mean(s.get("atropos/policy_lag_mean", 0.0) for s in steps), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="metrics.jsonl of a run")
    parser.add_argument("--skip", type=int, default=1, help="leading steps left out (the first waits for environments to start)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args()
    records = [record.get("data", {}) for record in read_step_metrics(args.metrics)]
    steps = [step for step in records if step.get("atropos/from_atropos") == 1.0][args.skip:]
    if not steps:
        raise SystemExit(f"{args.metrics}: no step from Atropos after skipping {args.skip}")
    summary = summarize(steps)
    if args.json:
        print(json.dumps({"bench": "step_overhead", "metrics": str(args.metrics), **summary}))
        return
    for key, value in summary.items():
        print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
