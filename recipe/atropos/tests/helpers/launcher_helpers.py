"""Helpers shared by the tests that run the launcher as users run it, and check its processes by PID."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil

from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2

ROOT = Path(__file__).resolve().parents[4]
LAUNCHER = ROOT / "recipe" / "atropos" / "launch_atropos_verl_services.py"
DEMO_CONFIG = ROOT / "recipe" / "atropos" / "config" / "demo_cpu.yaml"
# Trainer overrides of the tests that check the weight sync to 1e-3 (policy_server/sync_check.py): the
# probe after every sync, and the actor in fp32 as both CPU rollouts sample (verl's default bf16
# autocast alone is a 3e-2 gap; the CPU platform keeps it, as fp32 steps take about twice as long here).
SYNC_CHECK_FP32 = ["trainer.atropos_inference.sync_check_tokens=8",
                   "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32"]


def start_launcher(tmp_path, *sets):
    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=8)
    command = [sys.executable, str(LAUNCHER), "--config", str(DEMO_CONFIG), "--set", f"run_dir={tmp_path / 'run'}",
               *[arg for item in sets for arg in ("--set", item)],
               f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
               "trainer.total_training_steps=50", f"trainer.default_local_dir={tmp_path / 'ckpt'}"]
    log = open(tmp_path / "launcher.log", "wb")  # noqa: SIM115
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log


def descendants(pid):
    try:
        return {child.pid: child for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return {}


def alive(processes):
    living = []
    for pid, process in processes.items():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(pid)
        except psutil.NoSuchProcess:
            pass
    return living
