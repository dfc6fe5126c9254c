"""The CPU demo: a tiny Qwen2 learns the `learnable` environment's format reward through the full loop.

Real `run-api`, RayGRPOAtroposTrainer on verl (CPU mode), verl's hf_cpu replica served to the
environment as its policy server, the `learnable` BaseEnv generating through it; all started and
stopped by the launcher (config/demo_cpu.yaml). Writes `<workdir>/summary.json` (per-step mean
reward, loss, env shares, poll wait, step time, policy lag; first-5 vs last-5 reward in standard
errors) and `<workdir>/training.png`.

`--no-weight-sync` is the control: the server keeps the initial weights, so the reward must stay flat.
`--rollout vllm` serves the environment from verl's own vLLM replicas (vLLM's CPU build, run from
.venv-vllm: `scripts/demo.sh --rollout vllm`) instead of the hf_cpu backend.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from recipe.atropos.launcher.services import LaunchResult, run_services
from recipe.atropos.launcher.config import RECIPE_CONFIG_DIR, load_launcher_config
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2

DEMO_CONFIG = RECIPE_CONFIG_DIR / "demo_cpu.yaml"
WORD_PIECE_DIRECTION = 8.0  # see tiny_model.build_tiny_qwen2
WINDOW = 5
# The demo's tiny Qwen2 has 2 attention heads of 32 dimensions (hidden 64): vLLM's CPU attention
# refuses heads of 16, and both rollouts serve the same model so that their runs compare.
DEMO_MODEL_HEADS = {"num_heads": 2, "num_kv_heads": 1}
# Trainer overrides per rollout backend.
ROLLOUTS: dict[str, list[str]] = {"hf_cpu": [], "vllm": ["+cpu_rollout=vllm"]}


def improvement_in_standard_errors(rewards: list[float], window: int = WINDOW) -> float:
    """(mean of the last `window` steps - mean of the first) / standard error of that difference."""
    if len(rewards) < 2 * window:
        return float("nan")
    first, last = rewards[:window], rewards[-window:]

    def variance(values: list[float]) -> float:
        mean = sum(values) / len(values)
        return sum((v - mean) ** 2 for v in values) / (len(values) - 1)

    se = math.sqrt(variance(first) / window + variance(last) / window)
    return in_standard_errors(sum(last) / window - sum(first) / window, se)


def in_standard_errors(delta: float, se: float) -> float:
    """`delta / se`; +-inf for a change without spread, 0 for no change."""
    return delta / se if se > 0 else math.copysign(math.inf, delta) if delta else 0.0


def format_number(value: Any, spec: str) -> str:
    """`value` in `spec`, or "-" where a metric is missing."""
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def per_env(data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """{environment name: value} of the metrics named `prefix<name>`."""
    return {key.removeprefix(prefix): value for key, value in data.items() if key.startswith(prefix)}


def step_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for data in steps:
        rows.append({
            "step": int(data.get("training/global_step", len(rows) + 1)),
            "mean_reward": data.get("atropos/mean_score"),
            "grad_norm": data.get("actor/grad_norm"),
            "response_length": data.get("response_length/mean"),
            "env_shares": per_env(data, "atropos/env_share/"),
            "env_mean_scores": per_env(data, "atropos/env_mean_score/"),
            "env_identical_score_rates": per_env(data, "atropos/env_identical_score_rate/"),
            "poll_wait_s": data.get("atropos/poll_wait_s"),
            "step_time_s": data.get("timing_s/step"),
            "policy_lag_mean": data.get("atropos/policy_lag_mean"),
            # |sampler's - recomputed log-prob| of the trained tokens (rows that sent inference_logprobs)
            "rollout_logprob_gap_max": data.get("atropos/rollout_logprob_gap_max"),
            "policy_version": data.get("atropos/inference/policy_version"),
            "entropy": data.get("actor/entropy"),
            "from_atropos": data.get("atropos/from_atropos"),
            "completion_tokens": data.get("atropos/inference/completion_tokens"),  # served so far
            "drain_timeouts": data.get("atropos/inference/drain_timeouts"),  # so far
            "straddled_completions": data.get("atropos/inference/straddled_completions"),  # so far
            "cache_resets": data.get("atropos/inference/cache_resets"),  # so far
            # trainer.atropos_inference.sync_check_tokens > 0: served vs recomputed log-probs after the sync.
            **{f"sync_check_{k.removeprefix('atropos/sync_check/')}": v for k, v in data.items()
               if k.startswith("atropos/sync_check/")},
        })
    return rows


def summarize(result: LaunchResult, weight_sync: bool, wall_s: float, rollout: str = "hf_cpu") -> dict[str, Any]:
    rows = step_rows(result.steps)
    rewards = [row["mean_reward"] for row in rows if row["mean_reward"] is not None]
    first = rewards[:WINDOW]
    last = rewards[-WINDOW:]
    return {
        "mode": "weight_sync" if weight_sync else "no_weight_sync",
        "rollout": rollout,
        "exit_code": result.exit_code,
        "steps_trained": len(rows),
        "wall_s": round(wall_s, 1),
        "reward_first5_mean": sum(first) / len(first) if first else None,
        "reward_last5_mean": sum(last) / len(last) if last else None,
        "improvement_standard_errors": improvement_in_standard_errors(rewards),
        "env_weights": result.weights,
        "env_measured_shares": result.measured_shares,
        "leftover_pids": result.leftover_pids,
        "steps": rows,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in summary["steps"]]
    # What moves when GRPO trains. Not actor/pg_loss: on-policy with one mini-batch the ratio is 1 and
    # advantages are zero-mean per group, so its value stays near 0 while its gradient does not.
    panels = (("mean_reward", "mean reward (learnable)", "tab:blue"), ("entropy", "actor/entropy", "tab:green"),
              ("grad_norm", "actor/grad_norm", "tab:red"), ("response_length", "response_length/mean", "tab:purple"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, (key, label, color) in zip(axes.flat, panels):
        ax.plot(steps, [row[key] for row in summary["steps"]], marker="o", color=color)
        ax.set_ylabel(label)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(f"CPU demo, {summary['mode']}: reward last-5 vs first-5 = "
                 f"{summary['improvement_standard_errors']:.1f} standard errors")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_demo_inputs(workdir: Path) -> tuple[Path, Path]:
    """The demo's tiny model and prompt file in `workdir` (config/quickstart_cpu.yaml reuses them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_qwen2(workdir / "tiny_qwen2", word_piece_direction=WORD_PIECE_DIRECTION, **DEMO_MODEL_HEADS)
    return model, write_arithmetic_parquet(workdir / "train.parquet", n=32)


def run_demo(workdir: Path, steps: int, weight_sync: bool, overrides: list[str], launcher_sets: list[str],
             rollout: str = "hf_cpu") -> dict[str, Any]:
    model, data = make_demo_inputs(workdir)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={workdir}", *launcher_sets])
    trainer_overrides = [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"trainer.atropos_inference.weight_sync={str(weight_sync).lower()}", *ROLLOUTS[rollout], *overrides,
    ]
    started = time.monotonic()
    result = run_services(config, trainer_overrides)
    summary = summarize(result, weight_sync, time.monotonic() - started, rollout)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["steps"]:
        plot(summary, workdir / "training.png")
    return summary


def print_summary(summary: dict[str, Any], workdir: Path) -> None:
    print(f"{'step':>4} {'reward':>7} {'entropy':>8} {'grad':>7} {'resp_len':>8} {'lag':>4} {'step_s':>6}  env shares")
    for row in summary["steps"]:
        shares = " ".join(f"{name}={share:.0%}" for name, share in row["env_shares"].items())
        print(f"{row['step']:>4} {format_number(row['mean_reward'], '7.3f')} {format_number(row['entropy'], '8.3f')} "
              f"{format_number(row['grad_norm'], '7.3f')} {format_number(row['response_length'], '8.1f')} "
              f"{format_number(row['policy_lag_mean'], '4.1f')} {format_number(row['step_time_s'], '6.2f')}  {shares}")
    print(f"[demo] {summary['mode']} on {summary['rollout']}: reward first-5 {summary['reward_first5_mean']}, last-5 {summary['reward_last5_mean']}, "
          f"improvement {summary['improvement_standard_errors']:.2f} standard errors; wall {summary['wall_s']}s; "
          f"exit {summary['exit_code']}; leftover processes {summary['leftover_pids']}")
    print(f"[demo] wrote {workdir / 'summary.json'} and {workdir / 'training.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-weight-sync", action="store_true", help="control run: serve the initial weights throughout")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="edit config/demo_cpu.yaml")
    parser.add_argument("--rollout", choices=sorted(ROLLOUTS), default="hf_cpu",
                        help="verl rollout backend serving the environment (vllm: run from .venv-vllm)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the trainer")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    summary = run_demo(workdir, args.steps, not args.no_weight_sync, args.overrides, args.set, args.rollout)
    print_summary(summary, workdir)
    sys.exit(summary["exit_code"] or (1 if summary["leftover_pids"] else 0))


if __name__ == "__main__":
    main()
