"""verl's own GRPO against the Atropos loop, side by side, on the same model, problems and step shape.

(a) `verl`: `python -m verl.trainer.main_ppo` with verl's RayPPOTrainer (trainer_cls=null), verl's agent
    loop generating on its vLLM replicas, and a reward function with the math environment's scoring rule
    (recipe/atropos/envs/answer_scoring.py) over the environment's training problems in a parquet.
(b) `atropos`: the launcher (run-api, the `math` environment generating through the policy server in
    front of the same vLLM replicas, RayGRPOAtroposTrainer).

Both: SmolLM2-135M-Instruct on verl's vLLM rollout (vLLM's CPU build), `--groups` groups x `--samples`
answers a step, prompts up to 64 and answers up to 96 tokens at temperature 0.7, the same optimizer, KL
loss, seeds and number of steps, run back to back. Per run, over the steps after the first `--skip`
(step 1 pays the engine's and the environment's start): steps/s and trained tokens/s (summed step
times), generated tokens/s (answers sampled: (a) the step's responses, (b) what the policy server served
in those steps), the mean time per step of each part (`split_s`), the mean policy lag and the reward
(first step, mean of the last 3). The last line is JSON with "ratio_steps_per_s" = (b) / (a). From
.venv-vllm:

    .venv-vllm/bin/python scripts/bench_vs_verl_grpo.py [--steps 10] [--skip 2] [--workdir /tmp/bench_vs_verl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_step_overhead import step_figures  # noqa: E402  (beside this script)
from recipe.atropos.envs import answer_scoring  # noqa: E402
from recipe.atropos.envs.math_env import math_items  # noqa: E402
from recipe.atropos.examples.demo_math import (DEMO_CONFIG, HELDOUT_SHARE, PRESET, write_heldout_parquet,  # noqa: E402
                                               write_problems_parquet)
from recipe.atropos.examples.smollm2_model import prepare_smollm2  # noqa: E402
from recipe.atropos.launcher.config import RECIPE_CONFIG_DIR, EnvSpec, load_launcher_config  # noqa: E402
from recipe.atropos.launcher.managed_process import ManagedProcess, raise_on_termination_signals  # noqa: E402
from recipe.atropos.launcher.services import read_step_metrics, run_services  # noqa: E402

NUM_ITEMS = 125  # the math demo's training set: ~100 problems after the held-out share
TEMPERATURE = 0.7
MAX_PROMPT, MAX_RESPONSE = 64, 96
EXIT_GRACE_S = 60.0
# The parts of a step, by verl's timer names; `data` is what the step waited for its batch.
VERL_DATA_TIMERS = ("timing_s/gen", "timing_s/reward")
SHARED_TIMERS = ("timing_s/old_log_prob", "timing_s/ref", "timing_s/adv", "timing_s/update_actor",
                 "timing_s/update_weights")


def shared_overrides(model: Path, train: Path, val: Path, steps: int, groups: int, samples: int,
                     seed: int) -> list[str]:
    """The Hydra overrides both runs share: model, problems, step shape, optimizer, seeds."""
    rows = groups * samples
    return [
        "+platform=cpu", "+cpu_rollout=vllm",
        f"actor_rollout_ref.model.path={model}", f"data.train_files={train}", f"data.val_files={val}",
        f"data.train_batch_size={groups}", f"actor_rollout_ref.rollout.n={samples}",
        f"data.max_prompt_length={MAX_PROMPT}", f"data.max_response_length={MAX_RESPONSE}",
        f"actor_rollout_ref.rollout.max_model_len={MAX_PROMPT + MAX_RESPONSE}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={groups}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rows}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rows}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={rows}",
        "actor_rollout_ref.actor.optim.lr=2e-5", "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.001", "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"trainer.total_training_steps={steps}", "trainer.val_before_train=false", "trainer.test_freq=-1",
        "trainer.save_freq=-1", "trainer.logger=[console,file]",
        f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
        f"reward.custom_reward_function.path={Path(answer_scoring.__file__).resolve()}",
    ]


def finished(metrics: Path, steps: int) -> bool:
    """Whether verl's file logger has the record of step `steps`."""
    return any(r.get("step") == steps or r.get("data", {}).get("training/global_step") == steps
               for r in read_step_metrics(metrics))


def run_verl_grpo(workdir: Path, overrides: list[str], steps: int, timeout_s: float) -> tuple[int, list[dict], float]:
    """(a): verl's main_ppo with verl's own trainer; (exit code, per-step metrics, wall seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    metrics = workdir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    command = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(RECIPE_CONFIG_DIR),
               "--config-name", "gsm8k_grpo_example", "trainer_cls=null",
               f"actor_rollout_ref.rollout.temperature={TEMPERATURE}", "trainer.experiment_name=bench_verl_grpo",
               f"trainer.default_local_dir={workdir / 'checkpoints'}",
               f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={metrics}", *overrides]
    env = {**load_launcher_config(DEMO_CONFIG).process_env, "VERL_PLATFORM": "cpu", "VERL_FILE_LOGGER_PATH": str(metrics)}
    started = time.monotonic()
    process = ManagedProcess("verl_main_ppo", command, log_path=workdir / "trainer.log", env=env)
    with process:  # started here, stopped (process group and descendants) on the way out
        deadline = started + timeout_s
        while process.running() and time.monotonic() < deadline and not finished(metrics, steps):
            process.track_children()
            time.sleep(2.0)
        # On this CPU setup main_ppo has been seen to stay up for 20 minutes after its last step
        # (2026-12-06): once the last step is logged it gets EXIT_GRACE_S to exit, then it is stopped.
        grace = time.monotonic() + EXIT_GRACE_S
        while process.running() and time.monotonic() < min(grace, deadline):
            time.sleep(2.0)
        trained = finished(metrics, steps)
        own_exit = process.returncode  # None while it still runs
        if process.running():
            print(f"[bench] verl's main_ppo still running ({'after its last step' if trained else f'after {timeout_s:.0f}s'}); "
                  f"stopping it (log {process.log_path})")
    code = own_exit if own_exit is not None else (0 if trained else 124)
    return code, [r.get("data", {}) for r in read_step_metrics(metrics)], time.monotonic() - started


def run_atropos_loop(workdir: Path, overrides: list[str], groups: int, samples: int,
                     seed: int) -> tuple[int, list[dict], float]:
    """(b): the launcher with the math environment alone (no filter: every group it scores is trained)."""
    env = EnvSpec(name="math", module="recipe.atropos.envs.math_env", weight=1.0, group_size=samples,
                  max_token_length=MAX_PROMPT + MAX_RESPONSE,
                  args=["--env.preset", PRESET, "--env.heldout_share", str(HELDOUT_SHARE), "--env.num_items",
                        str(NUM_ITEMS), "--env.temperature", str(TEMPERATURE), "--env.max_completion_tokens",
                        str(MAX_RESPONSE), "--env.max_batches_offpolicy", "1", "--env.seed", str(seed)])
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={workdir}"])
    # as many concurrent groups as verl's agent loop samples at once: the same load on the replicas
    config = dataclasses.replace(config, environments=[env], total_workers=groups,
                                 trainer=dataclasses.replace(config.trainer, overrides=[]))
    started = time.monotonic()
    result = run_services(config, ["trainer.experiment_name=bench_atropos_loop", "trainer.atropos.fallback_to_grpo=false",
                                   f"trainer.default_local_dir={workdir / 'checkpoints'}", *overrides])
    steps = [s for s in result.steps if "training/global_step" in s and "timing_s/step" in s]
    return result.exit_code, steps, time.monotonic() - started


def split(step: dict[str, float], side: str) -> dict[str, float]:
    """The step's seconds by part: waiting for data, the shared verl parts, our overhead, the rest."""
    parts: dict[str, float] = {}
    if side == "verl":
        parts["data"] = sum(step.get(name, 0.0) for name in VERL_DATA_TIMERS)
    else:
        figures = step_figures(step)
        parts["data"] = figures["exposed_wait_s"]
        # step_figures counts the advantage step as ours (verl's GRPO with our override rule); here it
        # is a shared part, so it is taken out of ours.
        parts["ours"] = figures["overhead_s"] - step.get("timing_s/adv", 0.0) + step.get("timing_s/sync_check", 0.0)
    for name in SHARED_TIMERS:
        parts[name.removeprefix("timing_s/")] = step.get(name, 0.0)
    parts["other"] = step["timing_s/step"] - sum(parts.values())
    return parts


def figures(side: str, code: int, steps: list[dict], wall_s: float, skip: int, rows: int) -> dict[str, Any]:
    window = steps[skip:]
    if not window:
        return {"run": side, "exit_code": code, "steps": len(steps), "wall_s": round(wall_s, 1)}
    step_s = sum(s["timing_s/step"] for s in window)
    if side == "verl":
        generated = sum(s.get("response_length/mean", 0.0) * rows for s in window)
    else:  # completions the policy server served from the end of the last skipped step to the window's end
        served = [s.get("atropos/inference/completion_tokens", 0.0) for s in steps]
        generated = served[-1] - (served[skip - 1] if skip else 0.0)
    splits = [split(s, side) for s in window]
    rewards = [s.get("critic/score/mean", float("nan")) for s in steps]
    return {
        "run": side, "exit_code": code, "steps": len(steps), "window_steps": len(window), "wall_s": round(wall_s, 1),
        "steps_per_s": round(len(window) / step_s, 5), "median_step_s": round(statistics.median(s["timing_s/step"] for s in window), 2),
        "trained_tokens_per_s": round(sum(s.get("perf/total_num_tokens", 0.0) for s in window) / step_s, 1),
        "generated_tokens_per_s": round(generated / step_s, 1),
        "split_s": {part: round(statistics.fmean(p[part] for p in splits), 3) for part in splits[0]},
        "mean_policy_lag": round(statistics.fmean(s.get("atropos/policy_lag_mean", 0.0) for s in window), 3),
        "response_length_mean": round(statistics.fmean(s.get("response_length/mean", 0.0) for s in window), 1),
        "reward_first_step": round(rewards[0], 3), "reward_last3": round(statistics.fmean(rewards[-3:]), 3),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    parts = list(dict.fromkeys(part for row in rows for part in row.get("split_s", {})))
    print("| run | steps/s | median step s | trained tok/s | generated tok/s | " + " | ".join(parts)
          + " | lag | answer tokens | reward step 1 -> last 3 | wall s |")
    print("| --- " * (10 + len(parts)) + "|")
    for row in rows:
        if "steps_per_s" not in row:
            print(f"| {row['run']} | exit {row['exit_code']}, {row['steps']} steps |")
            continue
        cells = " | ".join(f"{row['split_s'].get(part, 0.0):.2f}" for part in parts)
        print(f"| {row['run']} | {row['steps_per_s']:.4f} | {row['median_step_s']:.1f} | {row['trained_tokens_per_s']:.0f} | "
              f"{row['generated_tokens_per_s']:.0f} | {cells} | {row['mean_policy_lag']:.2f} | {row['response_length_mean']:.0f} | "
              f"{row['reward_first_step']:.3f} -> {row['reward_last3']:.3f} | {row['wall_s']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2, help="leading steps left out of the rates")
    parser.add_argument("--groups", type=int, default=4, help="groups (prompts) a step")
    parser.add_argument("--samples", type=int, default=6, help="answers a group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds each run may take")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_vs_verl"))
    parser.add_argument("--only", choices=("verl", "atropos"), help="run one side")
    args = parser.parse_args()
    if args.skip >= args.steps:
        parser.error("--skip must be below --steps")
    raise_on_termination_signals()  # `with` blocks and the launcher stop what they started
    workdir = args.workdir.resolve()
    train = write_problems_parquet(workdir / "train.parquet", math_items(NUM_ITEMS, args.seed, PRESET, HELDOUT_SHARE),
                                   "train", data_source="atropos_math")
    val = write_heldout_parquet(workdir / "heldout.parquet", 8)  # verl wants one; never validated here
    overrides = shared_overrides(prepare_smollm2(), train, val, args.steps, args.groups, args.samples, args.seed)
    rows = []
    if args.only in (None, "verl"):
        code, steps, wall = run_verl_grpo(workdir / "verl", overrides, args.steps, args.timeout)
        rows.append(figures("verl", code, steps, wall, args.skip, args.groups * args.samples))
    if args.only in (None, "atropos"):
        code, steps, wall = run_atropos_loop(workdir / "atropos", overrides, args.groups, args.samples, args.seed)
        rows.append(figures("atropos", code, steps, wall, args.skip, args.groups * args.samples))
    print_table(rows)
    by_run = {row["run"]: row for row in rows}
    ratio = (by_run["atropos"]["steps_per_s"] / by_run["verl"]["steps_per_s"]
             if all("steps_per_s" in by_run.get(run, {}) for run in ("verl", "atropos")) else None)
    print(json.dumps({"bench": "vs_verl_grpo", "ratio_steps_per_s": round(ratio, 3) if ratio else None,
                      "steps": args.steps, "skip": args.skip, "groups": args.groups, "samples": args.samples,
                      "runs": rows}))
    sys.exit(1 if any(row["exit_code"] for row in rows) else 0)


if __name__ == "__main__":
    main()
