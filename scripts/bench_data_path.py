"""Benchmark of the integration's data path: `/batch` JSON bytes -> validated groups -> verl DataProto
-> advantages, against its floor (a plain JSON decode of the same bytes) and a naive per-token
Python baseline (how earlier integrations built the tensors).

The bytes are captured from a real `run-api`: groups are posted to it and one `/batch` answer is
recorded per configuration (with the server's serve time). Each variant then runs `--repeats`
times on those bytes; figures are medians with the interquartile range. The floor is the faster of
orjson and simdjson decoding the bytes into Python objects; ours is `AtroposEnvironmentClient.
batch_from_payload` (simdjson straight into numpy, batch_payload.py) + DataProto + advantages.

    .venv/bin/python scripts/bench_data_path.py                 # the three sizes, +/- advantages and logprobs
    .venv/bin/python scripts/bench_data_path.py --sizes 64x2048 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import simdjson
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipe.atropos.atropos_core_algos import AtroposGRPOComputer  # noqa: E402
from recipe.atropos.auth.run_token import auth_headers, ensure_run_token, run_token  # noqa: E402
from recipe.atropos.launcher.api_process import RunApiProcess  # noqa: E402
from recipe.atropos.launcher.managed_process import raise_on_termination_signals  # noqa: E402
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto  # noqa: E402
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient  # noqa: E402
from recipe.atropos.examples.env_api import post_groups, register_env  # noqa: E402
from recipe.atropos.net import direct_http  # noqa: E402

GROUP_SIZE = 8
VOCAB = 151_000


def make_groups(sequences: int, tokens: int, extras: bool, seed: int = 0) -> list[dict[str, Any]]:
    """`sequences` sequences of `tokens` tokens (a quarter prompt), in groups of GROUP_SIZE; with
    `extras`, per-token advantages and inference_logprobs as environments send them."""
    rng = np.random.default_rng(seed)
    prompt = tokens // 4
    groups = []
    for _ in range(sequences // GROUP_SIZE):
        ids = rng.integers(0, VOCAB, size=(GROUP_SIZE, tokens))
        masks = ids.copy()
        masks[:, :prompt] = -100
        group: dict[str, Any] = {
            "tokens": ids.tolist(),
            "masks": masks.tolist(),
            "scores": rng.random(GROUP_SIZE).round(4).tolist(),
        }
        if extras:
            group["advantages"] = rng.normal(size=(GROUP_SIZE, tokens)).round(4).tolist()
            logprobs = -rng.random((GROUP_SIZE, tokens)).round(4)
            logprobs[:, :prompt] = 1.0
            group["inference_logprobs"] = logprobs.tolist()
        groups.append(group)
    return groups


def capture_batch_bytes(sequences: int, tokens: int, extras: bool, gzip: bool = False) -> tuple[bytes, float]:
    """The bytes of one real `/batch` answer holding these groups, and the server's time to serve it
    (uncompressed, as the trainer asks by default, or gzipped: `trainer.atropos.gzip_batches`)."""
    ensure_run_token()  # run-api and this process's client share it
    with RunApiProcess() as api:
        client = AtroposEnvironmentClient({"api_url": api.url, "timeout": 300.0})
        client.register(batch_size=sequences, max_token_len=tokens, num_steps=10)
        assert client.get_batch() is None  # opens /register-env
        env_id = register_env(api.url, name="bench", weight=1.0, group_size=GROUP_SIZE, max_token_length=tokens)
        groups = make_groups(sequences, tokens, extras)
        for start in range(0, len(groups), 8):
            post_groups(api.url, groups[start:start + 8], env_id=env_id, timeout=300.0)
        started = time.perf_counter()
        encoding = {"Accept-Encoding": "gzip" if gzip else "identity"}
        response = direct_http.get(f"{api.url}/batch", headers={**encoding, **auth_headers(run_token())}, timeout=600)
        served_s = time.perf_counter() - started
        response.raise_for_status()
        return response.content, served_s


def ours(payload: bytes, tokens: int) -> torch.Tensor:
    """The integration's path, as the trainer runs it."""
    client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"}, vocab_size=VOCAB, max_token_len=tokens)
    batch = client.batch_from_payload(payload)
    prompt = tokens // 4  # as make_groups lays the sequences out: no padding beyond the sequences
    data = scored_data_to_dataproto(batch.groups, pad_token_id=0, max_prompt_length=prompt,
                                    max_response_length=tokens - prompt)
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    return AtroposGRPOComputer().compute(data).batch["advantages"]


def naive(payload: bytes, tokens: int) -> torch.Tensor:
    """Per-token Python lists (stdlib json, loops over every token), as earlier integrations did."""
    groups = json.loads(payload)["batch"]
    input_ids, response_masks, advantages = [], [], []
    for group in groups:
        scores = group["scores"]
        mean = sum(scores) / len(scores)
        std = (sum((s - mean) ** 2 for s in scores) / max(1, len(scores) - 1)) ** 0.5
        for i, (seq, mask) in enumerate(zip(group["tokens"], group["masks"])):
            row_ids, row_mask, row_adv = [], [], []
            for j in range(tokens):
                if j < len(seq):
                    row_ids.append(seq[j])
                    row_mask.append(1 if mask[j] != -100 else 0)
                    env_adv = group.get("advantages")
                    row_adv.append(env_adv[i][j] if env_adv else (scores[i] - mean) / (std + 1e-6))
                else:
                    row_ids.append(0)
                    row_mask.append(0)
                    row_adv.append(0.0)
            input_ids.append(row_ids)
            response_masks.append(row_mask)
            advantages.append(row_adv)
    torch.tensor(input_ids)
    return torch.tensor(advantages) * torch.tensor(response_masks)


# The floor: a plain JSON decode of the same bytes into Python objects, nothing else; the fastest of
# these two decoders in the same run.
FLOOR_DECODERS: dict[str, Callable[[bytes], Any]] = {"orjson.loads": orjson.loads, "simdjson.loads": simdjson.loads}


def timed(fn: Callable[[bytes, int], Any], payload: bytes, tokens: int, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(payload, tokens)
        times.append((time.perf_counter() - started) * 1000)
    q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median_ms": round(median, 2), "iqr_ms": round(q3 - q1, 2)}


def bench(sequences: int, tokens: int, extras: bool, repeats: int, naive_repeats: int, gzip: bool) -> dict[str, Any]:
    payload, served_s = capture_batch_bytes(sequences, tokens, extras, gzip)
    total_tokens = sequences * tokens
    row: dict[str, Any] = {
        "shape": f"{sequences}x{tokens}", "advantages_and_logprobs": extras,
        "payload_mb": round(len(payload) / 1e6, 2), "server_serve_s": round(served_s, 2), "gzip_on_the_wire": gzip,
        "decoders": {name: timed(lambda data, _, fn=fn: fn(data), payload, tokens, repeats)
                     for name, fn in FLOOR_DECODERS.items()},
        "ours": timed(ours, payload, tokens, repeats),
        "naive": timed(naive, payload, tokens, naive_repeats),
    }
    row["floor_decoder"] = min(row["decoders"], key=lambda name: row["decoders"][name]["median_ms"])
    row["floor"] = row["decoders"][row["floor_decoder"]]
    row["ours_tokens_per_s"] = round(total_tokens / (row["ours"]["median_ms"] / 1000))
    row["ours_over_floor"] = round(row["ours"]["median_ms"] / row["floor"]["median_ms"], 2)
    row["naive_over_ours"] = round(row["naive"]["median_ms"] / row["ours"]["median_ms"], 1)
    return row


def main() -> None:
    raise_on_termination_signals()  # killed by a signal: the processes started here are still stopped
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x2048,256x4096,1024x1024", help="comma-separated SEQUENCESxTOKENS")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--naive-repeats", type=int, default=3, help="repeats of the (slow) naive baseline")
    parser.add_argument("--gzip", action="store_true", help="ask run-api for gzip (the server's serve time changes, the bytes decoded do not)")
    parser.add_argument("--json", action="store_true", help="print all figures as one JSON line")
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        sequences, tokens = (int(part) for part in size.lower().split("x"))
        for extras in (True, False):
            row = bench(sequences, tokens, extras, args.repeats, args.naive_repeats, args.gzip)
            rows.append(row)
            if not args.json:
                print(f"{row['shape']:>10} adv+logprobs={str(extras):5} payload {row['payload_mb']:7.2f} MB  "
                      f"server {row['server_serve_s']:6.2f} s  floor {row['floor']['median_ms']:8.1f} ms ({row['floor_decoder']})  "
                      f"ours {row['ours']['median_ms']:8.1f} ms (iqr {row['ours']['iqr_ms']:.1f})  "
                      f"naive {row['naive']['median_ms']:9.1f} ms  ours/floor {row['ours_over_floor']:.2f}  "
                      f"naive/ours {row['naive_over_ours']:.1f}  {row['ours_tokens_per_s'] / 1e6:.1f}M tok/s", flush=True)
    if args.json:
        print(json.dumps({"bench": "data_path", "rows": rows}))


if __name__ == "__main__":
    main()
