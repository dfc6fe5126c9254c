"""The CPU math demo: SmolLM2-135M-Instruct gets better at Atropos's `math` environment.

The launcher (config/demo_math.yaml) runs a real `run-api`, RayGRPOAtroposTrainer with verl's vLLM
replicas (vLLM's CPU build) serving the pretrained model, and two environments: `math` (one- and
two-digit addition and subtraction, 80%) and `gsm8k` (20%). Held-out problems, a share of the problem
space the math environment never serves, are scored by verl's own validation (greedy,
`trainer.val_before_train`, `trainer.test_freq`, and at the end) with the environment's scoring rule.

The math environment sends only groups whose answers differ (Atropos's `ensure_scores_are_not_same`),
so the reward of the trained groups is squeezed towards 0.5; each environment also logs every group it
scored with its problem's key (`logs/scores_<name>.jsonl`), and the reward of all sampled math answers is
the learning curve. The math training set is small enough to be served two or three times a run, so each
problem's last sampled reward is compared with its first (`math_sampled_reward.per_item`).

Writes `<workdir>/summary.json` (per-step training reward and env shares; the sampled reward; `"heldout":
{"n", "accuracy": [[step, accuracy], ...]}` from step 0, with standard errors) and
`<workdir>/heldout_reward.png`.
Run it with `scripts/demo.sh --task math` (from .venv-vllm).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from recipe.atropos.envs import answer_scoring
from recipe.atropos.envs.math_env import SYSTEM_PROMPT, heldout_items
from recipe.atropos.examples.demo_cpu import (WINDOW, format_number, improvement_in_standard_errors,
                                              in_standard_errors, step_rows)
from recipe.atropos.examples.smollm2_model import prepare_smollm2
from recipe.atropos.launcher.config import RECIPE_CONFIG_DIR, load_launcher_config
from recipe.atropos.launcher.services import LaunchResult, run_services

DEMO_CONFIG = RECIPE_CONFIG_DIR / "demo_math.yaml"
PRESET = "two_digit_add_sub"
HELDOUT_SHARE = 0.2  # must equal the math environment's --env.heldout_share in demo_math.yaml
HELDOUT_SEED = 1234
HELDOUT_SOURCE = "atropos_math_heldout"
TRAINED_ENV = "math"
# verl's validation reports the reward's mean as `acc` when the reward function's answers are 0/1 scores.
HELDOUT_KEYS = (f"val-core/{HELDOUT_SOURCE}/acc/mean@1", f"val-core/{HELDOUT_SOURCE}/reward/mean@1")
ROLLOUTS: dict[str, list[str]] = {"vllm": ["+cpu_rollout=vllm"], "hf_cpu": []}


def write_problems_parquet(path: Path, items: list, split: str, data_source: str = HELDOUT_SOURCE) -> Path:
    """Math problems in verl's RL parquet format, prompted as the math environment prompts them."""
    rows = [{
        "data_source": data_source,
        "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": item.prompt}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": item.reference},
        "extra_info": {"split": split, "index": index},
    } for index, item in enumerate(items)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def write_heldout_parquet(path: Path, n: int, seed: int = HELDOUT_SEED) -> Path:
    """`n` held-out problems (a share of the problem space the math environment never serves)."""
    return write_problems_parquet(path, heldout_items(n, seed, PRESET, HELDOUT_SHARE), "heldout")


def standard_error(accuracy: float, n: int) -> float:
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n else float("nan")


def heldout_curve(records: list[dict[str, Any]], n: int) -> list[list[float]]:
    """[[step, accuracy, standard error], ...] from the validation records (step 0: before training)."""
    curve = []
    for data in records:
        key = next((key for key in HELDOUT_KEYS if key in data), None)
        if key is not None:
            accuracy = float(data[key])
            curve.append([int(data.get("training/global_step", 0)), accuracy, standard_error(accuracy, n)])
    return curve


def scores_log(workdir: Path, env_name: str) -> Path:
    """Where the environment `env_name` logs every group it scored (`--env.scores_log`)."""
    return workdir / "logs" / f"scores_{env_name}.jsonl"


def sampled_groups(path: Path) -> list[tuple[str | None, float]]:
    """(item key, mean score) of each group the environment scored, in order; [] when it logged none."""
    if not path.exists():
        return []
    return [(record.get("item"), sum(record["scores"]) / len(record["scores"]))
            for line in path.read_text().splitlines() if line.strip()
            for record in [json.loads(line)] if record["scores"]]


def repeated_item_summary(groups: list[tuple[str | None, float]]) -> dict[str, Any]:
    """Each problem scored more than once: its last group's mean score minus its first's.

    Pairing a problem with itself takes out the spread between problems (a group's mean is mostly 0 or
    1, set by the problem), which swamps a rise when different groups are compared.
    """
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    times: Counter[str] = Counter()
    for key, reward in groups:
        if key is not None:
            first.setdefault(key, reward)
            last[key] = reward
            times[key] += 1
    repeated = [key for key, count in times.items() if count > 1]
    summary: dict[str, Any] = {"items": len(times), "repeated_items": len(repeated), "first_mean": None,
                               "last_mean": None, "mean_change": None, "improvement_standard_errors": float("nan")}
    if len(repeated) < 2:
        return summary
    changes = [last[key] - first[key] for key in repeated]
    mean_change = statistics.fmean(changes)
    se = statistics.stdev(changes) / math.sqrt(len(changes))
    return {**summary, "first_mean": statistics.fmean(first[key] for key in repeated),
            "last_mean": statistics.fmean(last[key] for key in repeated), "mean_change": mean_change,
            "improvement_standard_errors": in_standard_errors(mean_change, se)}


def sampled_reward_summary(rewards: list[float]) -> dict[str, Any]:
    """The first fifth of the sampled groups against the last fifth, each group's mean a sample."""
    window = len(rewards) // 5
    if window < 2:
        return {"groups": len(rewards), "window_groups": window, "first_mean": None, "last_mean": None,
                "improvement_standard_errors": float("nan")}
    return {"groups": len(rewards), "window_groups": window, "first_mean": sum(rewards[:window]) / window,
            "last_mean": sum(rewards[-window:]) / window,
            "improvement_standard_errors": improvement_in_standard_errors(rewards, window)}


def summarize(result: LaunchResult, n_heldout: int, wall_s: float, rollout: str, seed: int,
              sampled: list[tuple[str | None, float]]) -> dict[str, Any]:
    rows = step_rows([data for data in result.steps if "training/global_step" in data])
    rewards = [row["env_mean_scores"][TRAINED_ENV] for row in rows if TRAINED_ENV in row["env_mean_scores"]]
    sampled_rewards = [reward for _, reward in sampled]
    curve = heldout_curve(result.steps, n_heldout)
    first, last = (curve[0], curve[-1]) if curve else (None, None)
    gain_se = ((last[1] - first[1]) / math.hypot(first[2], last[2])
               if curve and math.hypot(first[2], last[2]) > 0 else float("nan"))
    return {
        "task": "math", "rollout": rollout, "seed": seed, "exit_code": result.exit_code,
        "steps_trained": len(rows), "wall_s": round(wall_s, 1),
        # the trainer's steps, the validations after steps included (the wall adds start-up and step 0's)
        "training_s": round(sum(row["step_time_s"] or 0.0 for row in rows), 1),
        "heldout": {"n": n_heldout, "accuracy": [[step, acc] for step, acc, _ in curve],
                    "standard_error": [[step, se] for step, _, se in curve],
                    "gain_standard_errors": gain_se},
        # The training reward of the math environment's trained groups (gsm8k's stays near 0 for a 135M model).
        "math_reward_first5_mean": sum(rewards[:WINDOW]) / len(rewards[:WINDOW]) if rewards else None,
        "math_reward_last5_mean": sum(rewards[-WINDOW:]) / len(rewards[-WINDOW:]) if rewards else None,
        "math_reward_improvement_standard_errors": improvement_in_standard_errors(rewards),
        # Every group the math environment sampled, also those its filter kept from the trainer: the first
        # fifth against the last, and each problem served more than once against itself.
        "math_sampled_reward": {**sampled_reward_summary(sampled_rewards),
                                "per_item": repeated_item_summary(sampled), "per_group": sampled_rewards},
        "env_weights": result.weights, "env_measured_shares": result.measured_shares,
        "leftover_pids": result.leftover_pids, "steps": rows,
    }


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (heldout_ax, reward_ax, sampled_ax) = plt.subplots(3, 1, figsize=(7, 8.5))
    reward_ax.sharex(heldout_ax)
    curve = summary["heldout"]["accuracy"]
    errors = dict(map(tuple, summary["heldout"]["standard_error"]))
    heldout_ax.errorbar([s for s, _ in curve], [a for _, a in curve], yerr=[errors[s] for s, _ in curve],
                        marker="o", capsize=3)
    heldout_ax.set_ylabel(f"held-out accuracy (n={summary['heldout']['n']}, greedy)")
    heldout_ax.set_title(f"SmolLM2-135M-Instruct on math: held-out gain "
                         f"{summary['heldout']['gain_standard_errors']:.1f} standard errors")
    steps = [r for r in summary["steps"] if TRAINED_ENV in r["env_mean_scores"]]
    reward_ax.plot([r["step"] for r in steps], [r["env_mean_scores"][TRAINED_ENV] for r in steps], marker=".",
                   color="tab:green")
    reward_ax.set_ylabel(f"trained groups' reward ({TRAINED_ENV})")
    reward_ax.set_xlabel("step")
    sampled = summary["math_sampled_reward"]["per_group"]
    window = max(1, summary["math_sampled_reward"]["window_groups"])
    rolling = [sum(sampled[i - window:i]) / window for i in range(window, len(sampled) + 1)]
    sampled_ax.plot(range(window, len(sampled) + 1), rolling, color="tab:purple")
    sampled_ax.set_ylabel(f"sampled reward ({TRAINED_ENV},\nmean of {window} groups)")
    per_item = summary["math_sampled_reward"]["per_item"]
    if per_item["mean_change"] is not None:
        sampled_ax.set_title(f"{per_item['repeated_items']} problems served again: first "
                             f"{per_item['first_mean']:.2f} -> last {per_item['last_mean']:.2f} "
                             f"({per_item['improvement_standard_errors']:.1f} standard errors)")
    sampled_ax.set_xlabel(f"groups the {TRAINED_ENV} environment scored (sent or filtered)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_math_demo(workdir: Path, steps: int, n_heldout: int, test_freq: int, seed: int = 0,
                  rollout: str = "vllm", overrides: list[str] | None = None,
                  launcher_sets: list[str] | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    model = prepare_smollm2()
    heldout = write_heldout_parquet(workdir / "heldout.parquet", n_heldout)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={workdir}", *(launcher_sets or [])])
    environments = []
    for env in config.environments:  # the environments' problem order and mix follow the seed
        log = scores_log(workdir, env.name)
        log.unlink(missing_ok=True)  # an environment appends (a restarted one too): this run's starts afresh
        environments.append(dataclasses.replace(
            env, args=[*env.args, "--env.seed", str(seed), "--env.scores_log", str(log)]))
    config = dataclasses.replace(config, environments=environments)
    trainer_overrides = [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={heldout}", f"data.val_files={heldout}",
        f"trainer.total_training_steps={steps}", f"trainer.test_freq={test_freq}", f"data.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"reward.custom_reward_function.path={Path(answer_scoring.__file__).resolve()}",
        *ROLLOUTS[rollout], *(overrides or []),
    ]
    started = time.monotonic()
    result = run_services(config, trainer_overrides)
    summary = summarize(result, n_heldout, time.monotonic() - started, rollout, seed,
                        sampled_groups(scores_log(workdir, TRAINED_ENV)))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["heldout"]["accuracy"]:
        plot(summary, workdir / "heldout_reward.png")
    return summary


def print_summary(summary: dict[str, Any], workdir: Path) -> None:
    print(f"{'step':>4} {'reward':>7} {'lag':>4} {'step_s':>6}  env shares (mean score)")
    for row in summary["steps"]:
        shares = " ".join(f"{name}={share:.0%} ({row['env_mean_scores'].get(name, float('nan')):.2f})"
                          for name, share in row["env_shares"].items())
        reward = f"{row['mean_reward']:7.3f}" if row["mean_reward"] is not None else "      -"
        lag = f"{row['policy_lag_mean']:4.1f}" if row["policy_lag_mean"] is not None else "   -"
        step_s = f"{row['step_time_s']:6.1f}" if row["step_time_s"] is not None else "     -"
        print(f"{row['step']:>4} {reward} {lag} {step_s}  {shares}")
    heldout, sampled = summary["heldout"], summary["math_sampled_reward"]
    per_item = sampled["per_item"]
    errors = dict(map(tuple, heldout["standard_error"]))
    print(f"held-out accuracy (n={heldout['n']}, greedy): "
          + ", ".join(f"step {step}: {acc:.3f} ± {errors[step]:.3f}" for step, acc in heldout["accuracy"]))
    print(f"[demo math] held-out gain {heldout['gain_standard_errors']:.2f} standard errors; math sampled reward "
          f"(all {sampled['groups']} groups scored) first {sampled['window_groups']} {format_number(sampled['first_mean'], '.3f')}, "
          f"last {format_number(sampled['last_mean'], '.3f')} ({sampled['improvement_standard_errors']:.2f} SE); "
          f"the {per_item['repeated_items']} problems served again, first {format_number(per_item['first_mean'], '.3f')}, "
          f"last {format_number(per_item['last_mean'], '.3f')} ({per_item['improvement_standard_errors']:.2f} SE); trained groups' "
          f"reward first-5 steps {format_number(summary['math_reward_first5_mean'], '.3f')}, last-5 "
          f"{format_number(summary['math_reward_last5_mean'], '.3f')} ({summary['math_reward_improvement_standard_errors']:.2f} SE); "
          f"env shares {summary['env_measured_shares']}; "
          f"training {summary['training_s']}s, wall {summary['wall_s']}s; exit {summary['exit_code']}; leftover processes {summary['leftover_pids']}")
    print(f"[demo math] wrote {workdir / 'summary.json'} and {workdir / 'heldout_reward.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/demo_math"))
    parser.add_argument("--steps", type=int, default=24)
    # 500: the standard error of the gain (accuracy about 0.13 -> 0.35) is about 0.026 (200 left it near
    # 0.04); a mid-run validation of 500 takes about 2 minutes, so the default validates at steps 0, 12, 24.
    parser.add_argument("--heldout", type=int, default=500, help="held-out problems scored at each validation")
    parser.add_argument("--test-freq", type=int, default=12, help="validate every this many steps (and at the end)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the environments, data order and sampling")
    parser.add_argument("--rollout", choices=sorted(ROLLOUTS), default="vllm")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="edit config/demo_math.yaml")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the trainer")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    summary = run_math_demo(workdir, args.steps, args.heldout, args.test_freq, args.seed, args.rollout,
                            args.overrides, args.set)
    print_summary(summary, workdir)
    sys.exit(summary["exit_code"] or (1 if summary["leftover_pids"] else 0))


if __name__ == "__main__":
    main()
