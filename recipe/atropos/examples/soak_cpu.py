"""Soak run on CPU: environments producing faster than the trainer consumes, for `--minutes`.

The launcher runs as users run it (config/demo_cpu.yaml with two `learnable` environments allowed
to run `--ahead` batches ahead of the trainer, checkpoints every 20 steps), then gets Ctrl-C. Every
`--sample-every` seconds the resident memory of each kind of process (run-api, trainer with its Ray
workers, environments) is recorded. Writes `<workdir>/soak.json`: memory after warm-up and at the
end, policy lag against `max_policy_lag`, stale and repeated groups, steps, leftover processes and
the addresses run-api and the policy server listen on.

    bash scripts/soak.sh                    # 10 minutes into outputs/soak
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
from omegaconf import OmegaConf

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, WORD_PIECE_DIRECTION
from recipe.atropos.launcher.services import read_step_metrics
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2
from recipe.atropos.launcher.managed_process import raise_on_termination_signals

LAUNCHER = Path(__file__).resolve().parents[1] / "launch_atropos_verl_services.py"
MAX_POLICY_LAG = 2


def process_kind(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    if "run-api" in command:
        return "run-api"
    if "recipe.atropos.envs" in command:
        return "environments"
    return "trainer"


def _descendants(root: int) -> list[psutil.Process]:
    try:
        return psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def memory_by_kind(root: int) -> dict[str, float]:
    """Resident memory (MB) of every process under `root`, summed by kind."""
    totals: dict[str, float] = {"run-api": 0.0, "trainer": 0.0, "environments": 0.0}
    for child in _descendants(root):
        try:
            totals[process_kind(child)] += child.memory_info().rss / 1e6
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {kind: round(mb, 1) for kind, mb in totals.items()}


def listening_addresses(root: int, ports: set[int]) -> dict[int, list[str]]:
    """The addresses processes under `root` listen on, for the given ports."""
    found: dict[int, list[str]] = {port: [] for port in ports}
    for child in _descendants(root):
        try:
            for conn in child.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports:
                    found[conn.laddr.port].append(conn.laddr.ip)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def soak_config(workdir: Path, ahead: int) -> Path:
    raw = OmegaConf.load(DEMO_CONFIG)
    raw.run_dir = str(workdir / "run")
    raw.environments[0].args = ["--env.max_batches_offpolicy", str(ahead)]
    raw.environments[0].weight = 0.7
    raw.environments.append({**OmegaConf.to_container(raw.environments[0]), "name": "learnable_b", "weight": 0.3})
    path = workdir / "soak.yaml"
    OmegaConf.save(raw, path)
    return path


def main() -> None:
    raise_on_termination_signals()  # killed by a signal: the processes started here are still stopped
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("outputs/soak"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ahead", type=int, default=8, help="batches each environment may run ahead of the trainer")
    parser.add_argument("--sample-every", type=float, default=15.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_qwen2(workdir / "tiny_qwen2", word_piece_direction=WORD_PIECE_DIRECTION)
    data = write_arithmetic_parquet(workdir / "train.parquet", n=64)
    command = [sys.executable, str(LAUNCHER), "--config", str(soak_config(workdir, args.ahead)),
               f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
               "trainer.total_training_steps=100000", "trainer.save_freq=20", "trainer.max_actor_ckpt_to_keep=2",
               f"trainer.atropos.max_policy_lag={MAX_POLICY_LAG}", f"trainer.default_local_dir={workdir / 'checkpoints'}"]
    log_path = workdir / "launcher.log"
    samples: list[dict[str, Any]] = []
    listening: dict[int, list[str]] = {}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    print(f"[soak] launcher pid {launcher.pid}, log {log_path}; {args.minutes:.0f} minutes", flush=True)
    try:
        while launcher.poll() is None and time.monotonic() - started < args.minutes * 60:
            time.sleep(args.sample_every)
            elapsed = time.monotonic() - started
            steps = len(read_step_metrics(workdir / "run" / "metrics.jsonl"))
            samples.append({"elapsed_s": round(elapsed), "steps": steps, "rss_mb": memory_by_kind(launcher.pid)})
            if len(listening) < 2:  # run-api's port, then the policy server's once it is up
                listening = _our_listening(workdir, launcher.pid)
            print(f"[soak] {elapsed:6.0f}s step {steps:4d} rss {samples[-1]['rss_mb']}", flush=True)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
        exit_code = launcher.wait(timeout=300)
    summary = summarize(workdir, samples, args.warmup_minutes * 60, exit_code, listening, log_path.read_text(errors="replace"))
    (workdir / "soak.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))


def _our_listening(workdir: Path, root: int) -> dict[int, list[str]]:
    endpoint = workdir / "run" / "inference_endpoint.json"
    ports = set()
    if endpoint.exists():
        ports.add(urlparse(json.loads(endpoint.read_text())["base_url"]).port)
    launcher_log = (workdir / "launcher.log").read_text(errors="replace")
    match = re.search(r"run-api pid \d+ at http://[^:]+:(\d+)", launcher_log)
    if match:
        ports.add(int(match.group(1)))
    return listening_addresses(root, ports) if ports else {}


def summarize(workdir: Path, samples: list[dict[str, Any]], warmup_s: float, exit_code: int,
              listening: dict[int, list[str]], launcher_log: str) -> dict[str, Any]:
    steps = [record.get("data", {}) for record in read_step_metrics(workdir / "run" / "metrics.jsonl")]
    after_warmup = next((s for s in samples if s["elapsed_s"] >= warmup_s), samples[0] if samples else None)
    last = samples[-1] if samples else None
    growth = ({kind: round(last["rss_mb"][kind] - after_warmup["rss_mb"][kind], 1) for kind in last["rss_mb"]}
              if after_warmup and last else {})
    lags = [s["atropos/policy_lag_max"] for s in steps if "atropos/policy_lag_max" in s]
    return {
        "exit_code": exit_code,
        "steps": len(steps),
        "steps_from_atropos": sum(1 for s in steps if s.get("atropos/from_atropos") == 1.0),
        "policy_lag_max": max(lags) if lags else None,
        "max_policy_lag": MAX_POLICY_LAG,
        "stale_groups_dropped_total": steps[-1].get("atropos/stale_groups_dropped_total") if steps else None,
        "repeated_groups_total": steps[-1].get("atropos/repeated_groups_total") if steps else None,
        "invalid_groups_total": steps[-1].get("atropos/invalid_groups_total") if steps else None,
        "rss_mb_after_warmup": after_warmup["rss_mb"] if after_warmup else None,
        "rss_mb_at_end": last["rss_mb"] if last else None,
        "rss_mb_growth_after_warmup": growth,
        "listening": {str(port): addresses for port, addresses in listening.items()},
        "leftover_processes": "processes still alive after shutdown" in launcher_log,
        "samples": samples,
    }


if __name__ == "__main__":
    main()
