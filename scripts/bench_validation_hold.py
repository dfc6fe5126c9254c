"""What holding the environments during verl's validation saves on the math demo.

The math demo (SmolLM2-135M-Instruct on verl's vLLM CPU rollout, the `math` and `gsm8k` environments
generating through the policy server) run twice, the same but for
`trainer.atropos_inference.hold_during_validation`: held (the environments' new requests wait at the
policy server while verl validates on the same replicas) and shared (both generate at once). Per run:
each mid-run validation's seconds (`timing_s/testing`), the time requests were held, the held-out
accuracy at each validation and the trainer's time in all. The last line is JSON with
"validation_saving_s" = shared - held, summed over the mid-run validations. From .venv-vllm:

    .venv-vllm/bin/python scripts/bench_validation_hold.py [--steps 6] [--test-freq 3] [--heldout 500] [--workdir /tmp/bench_validation_hold]

`--report-only` reports the two runs already in `--workdir` again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.examples.demo_math import run_math_demo  # noqa: E402
from recipe.atropos.launcher.managed_process import raise_on_termination_signals  # noqa: E402
from recipe.atropos.launcher.services import read_step_metrics  # noqa: E402

HOLD = "trainer.atropos_inference.hold_during_validation"


def run(workdir: Path, hold: bool, args: argparse.Namespace) -> None:
    """One run of the math demo into `workdir/held` or `workdir/shared` (its summary.json and metrics)."""
    run_math_demo(workdir / run_name(hold), args.steps, args.heldout, args.test_freq, args.seed,
                  overrides=[f"{HOLD}={str(hold).lower()}"])


def run_name(hold: bool) -> str:
    return "held" if hold else "shared"


def figures(workdir: Path, hold: bool) -> dict[str, Any]:
    """A run's figures from what it wrote: the demo's summary.json and verl's step metrics."""
    name = run_name(hold)
    summary = json.loads((workdir / name / "summary.json").read_text())
    records = read_step_metrics(workdir / name / "metrics.jsonl")
    steps = [data for data in (record.get("data", {}) for record in records) if "timing_s/step" in data]
    validations = {int(s["training/global_step"]): round(s["timing_s/testing"], 1) for s in steps if "timing_s/testing" in s}
    return {
        "run": name, "exit_code": summary["exit_code"], "steps": summary["steps_trained"],
        "validation_s": validations,
        "held_s": round(steps[-1].get("atropos/inference/validation_hold_s", 0.0), 1) if steps else 0.0,
        "accuracy": {int(step): round(acc, 3) for step, acc in summary["heldout"]["accuracy"]},
        "training_s": summary["training_s"], "wall_s": summary["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--test-freq", type=int, default=3, help="validate every this many steps (and at the end)")
    parser.add_argument("--heldout", type=int, default=500, help="held-out problems scored at each validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_validation_hold"))
    parser.add_argument("--report-only", action="store_true", help="report the runs already in --workdir")
    args = parser.parse_args()
    raise_on_termination_signals()  # the launcher stops what it started
    workdir = args.workdir.resolve()
    if not args.report_only:
        for hold in (True, False):
            run(workdir, hold, args)
    rows = [figures(workdir, hold) for hold in (True, False)]
    print("| run | mid-run validations (step: s) | requests held s | held-out accuracy (step: acc) | training s | wall s |")
    print("| --- " * 6 + "|")
    for row in rows:
        print(f"| {row['run']} | {', '.join(f'{k}: {v}' for k, v in row['validation_s'].items())} | {row['held_s']} | "
              f"{', '.join(f'{k}: {v}' for k, v in row['accuracy'].items())} | {row['training_s']} | {row['wall_s']} |")
    held, shared = rows
    saving = sum(shared["validation_s"].values()) - sum(held["validation_s"].values())
    print(json.dumps({"bench": "validation_hold", "validation_saving_s": round(saving, 1), "steps": args.steps,
                      "test_freq": args.test_freq, "heldout": args.heldout, "runs": rows}))
    sys.exit(1 if any(row["exit_code"] for row in rows) else 0)


if __name__ == "__main__":
    main()
