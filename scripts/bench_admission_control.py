"""Admission control at the policy server, off and on, on a two-environment run where one environment is slow.

The CPU demo's loop (the tiny Qwen2 on verl's hf_cpu replica, RayGRPOAtroposTrainer, real run-api)
with two `learnable` environments at weights 0.7 / 0.3, the second slow: each of its groups takes
`--delay` seconds to score after its completions come back (recipe/atropos/examples/fast_and_slow.py).
Both generate up to `--offpolicy-batches` batches ahead (Atropos's default 3), the trainer drops
groups more than `--max-policy-lag` updates old. Run twice, the same but for
`trainer.atropos_inference.admission_control`. Per run, over the steps after the first `--skip`:
steps/s (summed step times), the groups dropped as stale over the whole run (and by environment), the
trained mix over the whole run against the weights, the mean and largest policy lag, and what
admission control held. The last line is JSON with "throughput_ratio" = on / off.

    .venv/bin/python scripts/bench_admission_control.py [--steps 24] [--skip 4] [--delay 3] [--workdir /tmp/bench_admission]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.examples.fast_and_slow import WEIGHTS, run_fast_and_slow  # noqa: E402
from recipe.atropos.launcher.managed_process import raise_on_termination_signals  # noqa: E402


def run(workdir: Path, admission: bool, args: argparse.Namespace) -> dict[str, Any]:
    name = "admission_on" if admission else "admission_off"
    result = run_fast_and_slow(workdir / name, steps=args.steps, admission=admission, delay_s=args.delay,
                               offpolicy_batches=args.offpolicy_batches, max_policy_lag=args.max_policy_lag,
                               overrides=(f"trainer.experiment_name=bench_{name}",))
    steps = [s for s in result.steps if "training/global_step" in s and "timing_s/step" in s]
    return figures(name, result.exit_code, steps, result.measured_shares, args.skip)


def figures(name: str, code: int, steps: list[dict], shares: dict[str, float], skip: int) -> dict[str, Any]:
    window = steps[skip:]
    if not window:
        return {"run": name, "exit_code": code, "steps": len(steps)}
    last = steps[-1]
    stale_by_env = {env: sum(s.get(f"atropos/dropped_groups/stale/{env}", 0.0) for s in steps) for env in WEIGHTS}
    admission = {key.removeprefix("atropos/inference/admission/"): value for key, value in last.items()
                 if key.startswith("atropos/inference/admission/")}
    return {
        "run": name, "exit_code": code, "steps": len(steps), "window_steps": len(window),
        "steps_per_s": round(len(window) / sum(s["timing_s/step"] for s in window), 4),
        "median_step_s": round(statistics.median(s["timing_s/step"] for s in window), 2),
        "stale_groups_dropped": int(last.get("atropos/stale_groups_dropped_total", 0.0)),
        "stale_by_env": {env: int(count) for env, count in stale_by_env.items()},
        "dropped_groups": int(last.get("atropos/dropped_groups_total", 0.0)),
        "shares": {env: round(shares.get(env, 0.0), 3) for env in WEIGHTS},
        "mix_error_points": round(100 * max(abs(shares.get(env, 0.0) - weight) for env, weight in WEIGHTS.items()), 1),
        "mean_policy_lag": round(statistics.fmean(s.get("atropos/policy_lag_mean", 0.0) for s in window), 2),
        "max_policy_lag": max(s.get("atropos/policy_lag_max", 0.0) for s in steps),
        "admission": admission,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| run | steps/s | median step s | stale groups dropped (fast / slow) | trained mix fast / slow | "
          "mix error | lag mean / max | requests held (s held) | released starved |")
    print("| --- " * 9 + "|")
    for row in rows:
        if "steps_per_s" not in row:
            print(f"| {row['run']} | exit {row['exit_code']}, {row['steps']} steps |")
            continue
        held = row["admission"]
        print(f"| {row['run']} | {row['steps_per_s']:.4f} | {row['median_step_s']:.2f} | {row['stale_groups_dropped']} "
              f"({row['stale_by_env']['fast']} / {row['stale_by_env']['slow']}) | {row['shares']['fast']:.3f} / "
              f"{row['shares']['slow']:.3f} | {row['mix_error_points']:.1f} pts | {row['mean_policy_lag']:.2f} / "
              f"{row['max_policy_lag']:.0f} | {held.get('held_requests', 0):.0f} ({held.get('held_s', 0):.0f}) | "
              f"{held.get('released_starved', 0):.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--skip", type=int, default=4, help="leading steps left out of the rates")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds the slow environment takes to score a group")
    parser.add_argument("--offpolicy-batches", type=int, default=3,
                        help="--env.max_batches_offpolicy of both environments (Atropos's default: 3)")
    parser.add_argument("--max-policy-lag", type=int, default=1)
    parser.add_argument("--only", choices=("off", "on"), help="run one of the two")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_admission"))
    args = parser.parse_args()
    if args.skip >= args.steps:
        parser.error("--skip must be below --steps")
    raise_on_termination_signals()  # the launcher stops what it started
    workdir = args.workdir.resolve()
    rows = [run(workdir, admission, args) for admission in (False, True)
            if args.only is None or args.only == ("on" if admission else "off")]
    print_table(rows)
    by_run = {row["run"]: row for row in rows}
    ratio = (by_run["admission_on"]["steps_per_s"] / by_run["admission_off"]["steps_per_s"]
             if all("steps_per_s" in by_run.get(run, {}) for run in ("admission_off", "admission_on")) else None)
    print(json.dumps({"bench": "admission_control", "throughput_ratio": round(ratio, 3) if ratio else None,
                      "steps": args.steps, "skip": args.skip, "delay_s": args.delay,
                      "offpolicy_batches": args.offpolicy_batches, "max_policy_lag": args.max_policy_lag,
                      "weights": WEIGHTS, "runs": rows}))
    sys.exit(1 if any(row["exit_code"] for row in rows) else 0)


if __name__ == "__main__":
    main()
