"""The CPU demo on each rollout backend, back to back: verl's vLLM rollout (vLLM's CPU build) and the
recipe's hf_cpu backend, same model, batch, lengths, environment and seeds (recipe/atropos/examples/demo_cpu.py).

Per run: steps per second of training (steps / summed step time), completion tokens the policy server
served per second of training (they include what the environment generated ahead of the trainer, which
is what it generates for the trainer), median step time, and the reward, first 5 vs last 5 steps in
standard errors. Both runs from .venv-vllm (it holds the base install too):

    .venv-vllm/bin/python scripts/bench_rollout_backends.py [--steps 30] [--workdir /tmp/bench_rollouts] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.examples.demo_cpu import run_demo  # noqa: E402
from recipe.atropos.launcher.managed_process import raise_on_termination_signals  # noqa: E402

BACKENDS = ("vllm", "hf_cpu")


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    steps = summary["steps"]
    step_times = [row["step_time_s"] for row in steps]
    trained_s = sum(step_times)
    return {
        "rollout": summary["rollout"], "exit_code": summary["exit_code"], "steps": len(steps),
        "wall_s": summary["wall_s"], "steps_per_s": round(len(steps) / trained_s, 4),
        "served_tokens_per_s": round(steps[-1]["completion_tokens"] / trained_s, 1),
        "median_step_s": round(statistics.median(step_times), 2),
        "reward_first5": round(summary["reward_first5_mean"], 3), "reward_last5": round(summary["reward_last5_mean"], 3),
        "improvement_se": round(summary["improvement_standard_errors"], 2),
        "leftover_pids": summary["leftover_pids"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_rollouts"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raise_on_termination_signals()  # the launcher inside run_demo stops its processes on the way out
    rows = [figures(run_demo(args.workdir / backend, args.steps, weight_sync=True, overrides=[], launcher_sets=[],
                             rollout=backend)) for backend in BACKENDS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| rollout | steps | wall s | steps/s | served tokens/s | median step s | reward first 5 -> last 5 | SE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['rollout']} | {row['steps']} | {row['wall_s']:.0f} | {row['steps_per_s']:.3f} | "
              f"{row['served_tokens_per_s']:.0f} | {row['median_step_s']:.2f} | {row['reward_first5']:.3f} -> "
              f"{row['reward_last5']:.3f} | {row['improvement_se']:+.2f} |")


if __name__ == "__main__":
    main()
