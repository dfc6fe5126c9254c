"""CPU smoke run: real `run-api`, a BaseEnv environment posting groups, and 3 GRPO steps of
`python -m verl.trainer.main_ppo ... trainer_cls=RayGRPOAtroposTrainer` on a tiny Qwen2.

Exits 0 only when every step trained on an Atropos batch with `actor/grad_norm > 0`; prints the
step metrics. Every process it starts is stopped by PID (process group) on the way out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from recipe.atropos.auth.run_token import ensure_run_token
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.launcher.managed_process import raise_on_termination_signals
from recipe.atropos.launcher.services import read_step_metrics as read_steps
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.launcher.managed_process import ManagedProcess
from recipe.atropos.examples.tiny_model import build_tiny_qwen2

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
TRAINER_CLS = "recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer"
SHOWN = ("atropos/mean_score", "atropos/override_fraction", "atropos/invalid_groups", "atropos/poll_wait_s",
         "actor/grad_norm", "actor/pg_loss", "critic/advantages/max", "timing_s/step")


ENTRIES = {
    # verl's own CLI with the recipe config and the trainer_cls key verl_patches adds
    "main_ppo": ["-m", "verl.trainer.main_ppo", "--config-path", str(CONFIG_DIR), "--config-name", "gsm8k_grpo_example",
                 f"trainer_cls={TRAINER_CLS}"],
    # the recipe's Hydra entry (same config by default)
    "main_atropos": ["-m", "recipe.atropos.main_atropos"],
}


def trainer_command(model: Path, data: Path, api_url: str, workdir: Path, steps: int, extra: list[str],
                    entry: str = "main_ppo") -> list[str]:
    return [
        sys.executable, *ENTRIES[entry], "+platform=cpu",
        f"trainer.total_training_steps={steps}",
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.atropos.api_url={api_url}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}",
        f"+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH={workdir / 'metrics.jsonl'}",
        *extra,
    ]


def env_command(model: Path, api_url: str, group_size: int, extra: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable, "-m", "recipe.atropos.envs.run_env", "recipe.atropos.envs.scripted_env", "serve",
        "--env.rollout_server_url", api_url, "--env.tokenizer_name", str(model),
        "--env.group_size", str(group_size), "--env.use_wandb", "false", "--slurm", "false", *extra,
    ]


def process_env(workdir: Path) -> dict[str, str]:
    """Environment of the trainer and environment processes: CPU mode, offline, step metrics to a file."""
    return {"VERL_PLATFORM": "cpu", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "VERL_FILE_LOGGER_PATH": str(workdir / "metrics.jsonl"), "RAY_DEDUP_LOGS": "0"}


def trainer_process(model: Path, data: Path, api_url: str, workdir: Path, steps: int, extra: list[str],
                    entry: str = "main_ppo", log_name: str = "trainer.log") -> ManagedProcess:
    return ManagedProcess("trainer", trainer_command(model, data, api_url, workdir, steps, extra, entry),
                          log_path=workdir / log_name, env=process_env(workdir))


def env_process(model: Path, api_url: str, workdir: Path, group_size: int = 4, extra: Sequence[str] = ()) -> ManagedProcess:
    """The scripted environment (envs/scripted_env.py); `extra`: its --env.* settings."""
    return ManagedProcess("scripted_env", env_command(model, api_url, group_size, extra),
                          log_path=workdir / "env.log", env=process_env(workdir))


def run_to_end(process: ManagedProcess, timeout: float) -> int | None:
    """Start, wait up to `timeout`, stop (by process group); the exit code, None when it timed out."""
    process.start()
    try:
        return process.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{process.name} did not finish within {timeout:.0f}s")
        return None
    finally:
        process.stop()


def run(workdir: Path, steps: int, timeout: float, extra: list[str], entry: str = "main_ppo") -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "metrics.jsonl").unlink(missing_ok=True)
    model = build_tiny_qwen2(workdir / "tiny_qwen2")
    data = write_arithmetic_parquet(workdir / "train.parquet", n=32)
    ensure_run_token()  # handed to run-api, the environment and the trainer through their environment
    started = time.monotonic()
    with RunApiProcess(log_path=workdir / "run-api.log") as api, env_process(model, api.url, workdir) as env:
        trainer = trainer_process(model, data, api.url, workdir, steps, extra, entry)
        print(f"run-api pid {api.pid} ({api.url}), env pid {env.pid}; trainer log {workdir / 'trainer.log'}")
        code = run_to_end(trainer, timeout)
    records = read_steps(workdir / "metrics.jsonl")
    for record in records:
        data_ = record["data"]
        shown = " ".join(f"{k}={data_[k]:.4g}" for k in SHOWN if k in data_)
        print(f"step {record['step']}: {shown}")
    wall = time.monotonic() - started
    trained = [r for r in records if "training/global_step" in r["data"]]  # not a validation-only record
    grads = [r["data"].get("actor/grad_norm", 0.0) for r in trained]
    from_atropos = [r["data"].get("atropos/from_atropos", 0.0) for r in trained]
    ok = code == 0 and len(trained) == steps and all(g > 0 for g in grads) and all(f == 1.0 for f in from_atropos)
    print(f"smoke: {'PASS' if ok else 'FAIL'}: trainer exit {code}, {len(trained)}/{steps} steps, "
          f"grad_norm {grads}, from_atropos {from_atropos}, wall {wall:.0f}s")
    if not ok:
        print(f"--- last lines of {workdir / 'trainer.log'} ---")
        print("\n".join((workdir / "trainer.log").read_text(errors="replace").splitlines()[-40:]))
    return 0 if ok else 1


def main() -> None:
    raise_on_termination_signals()  # killed by a signal: the processes started here are still stopped
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/smoke_cpu"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--entry", choices=sorted(ENTRIES), default="main_ppo")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the trainer")
    args = parser.parse_args()
    sys.exit(run(args.workdir.resolve(), args.steps, args.timeout, args.overrides, args.entry))


if __name__ == "__main__":
    main()
