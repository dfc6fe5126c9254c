"""What the policy server adds to a completion: `/v1/completions` through the trainer's proxy vs the
same request sent straight to verl's replica server (vLLM's own OpenAI server inside verl's vLLM
rollout), at 1, 16 and 64 concurrent requests.

The trainer runs as the CPU demo configures it with `+cpu_rollout=vllm` (run from .venv-vllm), but
no environment is started: the trainer waits for one, so nothing else uses the replica or the CPU while
the requests run. Each request: 16 prompt tokens, exactly 16 completion tokens (ignore_eos), T=1,
the sampled tokens' log-probs.
Rounds alternate between the two paths so that drift hits both alike.

    .venv-vllm/bin/python scripts/bench_policy_server.py [--workdir /tmp/bench_policy_server] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, DEMO_MODEL_HEADS, ROLLOUTS, WORD_PIECE_DIRECTION  # noqa: E402
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet  # noqa: E402
from recipe.atropos.examples.tiny_model import build_tiny_qwen2  # noqa: E402
from recipe.atropos.launcher.config import load_launcher_config  # noqa: E402
from recipe.atropos.launcher.managed_process import raise_on_termination_signals  # noqa: E402
from recipe.atropos.launcher.services import ServicesLauncher  # noqa: E402

CONCURRENCY = (1, 16, 64)
PROMPT = list(range(1000, 1016))
COMPLETION_TOKENS = 16  # the demo's response length: verl's vLLM server caps its OpenAI route at it


async def one_request(session: aiohttp.ClientSession, url: str, model: str) -> float:
    # logprobs 0: the sampled token's log-prob, as environments ask for it (and as the proxy always asks verl).
    body = {"model": model, "prompt": PROMPT, "max_tokens": COMPLETION_TOKENS, "temperature": 1.0,
            "ignore_eos": True, "logprobs": 0}
    started = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=body) as answer:
        answer.raise_for_status()
        payload = await answer.json()
    elapsed = time.perf_counter() - started
    tokens = payload["usage"]["completion_tokens"]
    if tokens != COMPLETION_TOKENS:
        raise RuntimeError(f"{url}: {tokens} completion tokens, expected {COMPLETION_TOKENS}")
    return elapsed


async def round_latencies(url: str, model: str, concurrency: int) -> list[float]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*[one_request(session, url, model) for _ in range(concurrency)]))


async def served_model(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/models") as answer:
        answer.raise_for_status()
        return (await answer.json())["data"][0]["id"]


async def measure(proxy_url: str, replica_url: str, rounds: int) -> list[dict]:
    paths = {"proxy": (proxy_url, await served_model(proxy_url)), "direct": (replica_url, await served_model(replica_url))}
    for url, model in paths.values():  # warm both paths up
        await round_latencies(url, model, 4)
    rows = []
    for concurrency in CONCURRENCY:
        latencies: dict[str, list[float]] = {name: [] for name in paths}
        for index in range(max(rounds, 24 // concurrency)):  # at least 24 requests per path
            order = list(paths) if index % 2 == 0 else list(reversed(paths))
            for name in order:
                latencies[name].extend(await round_latencies(*paths[name], concurrency))
        proxy, direct = statistics.mean(latencies["proxy"]), statistics.mean(latencies["direct"])
        rows.append({"concurrency": concurrency, "requests_per_path": len(latencies["proxy"]),
                     "direct_mean_s": round(direct, 4), "proxy_mean_s": round(proxy, 4),
                     "direct_median_s": round(statistics.median(latencies["direct"]), 4),
                     "proxy_median_s": round(statistics.median(latencies["proxy"]), 4),
                     "added_percent": round(100.0 * (proxy - direct) / direct, 2)})
    return rows


def idle_trainer(workdir: Path) -> ServicesLauncher:
    model = build_tiny_qwen2(workdir / "tiny_qwen2", word_piece_direction=WORD_PIECE_DIRECTION, **DEMO_MODEL_HEADS)
    data = write_arithmetic_parquet(workdir / "train.parquet", n=8)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={workdir}"])
    return ServicesLauncher(config, [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.default_local_dir={workdir / 'checkpoints'}", *ROLLOUTS["vllm"],
        # No environment comes: the trainer waits (long enough for the whole benchmark) and trains nothing.
        "trainer.atropos.max_wait_time=1800", "trainer.atropos.fallback_to_grpo=false",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_policy_server"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    raise_on_termination_signals()  # SIGTERM/SIGHUP unwind through the `finally` that stops the processes
    launcher = idle_trainer(args.workdir)
    try:
        endpoint = launcher.start_trainer()
        [replica] = endpoint["replica_addresses"]
        rows = asyncio.run(measure(endpoint["base_url"], f"http://{replica}", args.rounds))
    finally:
        leftover = launcher.stop()
    if leftover:
        raise SystemExit(f"processes still alive after the benchmark: {leftover}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| concurrent | requests per path | direct mean s | proxy mean s | direct median s | proxy median s | added |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['concurrency']} | {row['requests_per_path']} | {row['direct_mean_s']:.3f} | {row['proxy_mean_s']:.3f} | "
              f"{row['direct_median_s']:.3f} | {row['proxy_median_s']:.3f} | {row['added_percent']:+.1f}% |")


if __name__ == "__main__":
    main()
