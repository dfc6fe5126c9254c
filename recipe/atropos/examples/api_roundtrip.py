"""Interim demo: the data path through a real Atropos API server, end to end.

Starts `run-api` on loopback, registers as the trainer, registers two environments (weights
0.7 / 0.3), posts scored groups (one environment with per-token advantages, one without, and
one malformed group), then pulls batches with AtroposEnvironmentClient, converts them to verl's
DataProto and computes advantages through verl's patched `compute_advantage`. Prints one line
per batch. The training demo replaces this once the trainer lands.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import verl_patches  # noqa: F401  (applies the GRPO override patch)
from recipe.atropos.auth.run_token import ensure_run_token
from recipe.atropos.launcher.api_process import RunApiProcess
from recipe.atropos.launcher.managed_process import raise_on_termination_signals
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.examples.env_api import post_groups, register_env


def synthetic_group(rng: np.random.Generator, group_size: int, with_advantages: bool) -> dict:
    tokens, masks, advantages = [], [], []
    for _ in range(group_size):
        prompt, response = rng.integers(1, 5000, 6).tolist(), rng.integers(1, 5000, int(rng.integers(3, 10))).tolist()
        tokens.append(prompt + response)
        masks.append([-100] * len(prompt) + response)
        advantages.append([0.0] * len(prompt) + rng.normal(size=len(response)).round(3).tolist())
    return {"tokens": tokens, "masks": masks, "scores": rng.integers(0, 2, group_size).astype(float).tolist(),
            "advantages": advantages if with_advantages else None}


def main() -> None:
    raise_on_termination_signals()  # killed by a signal: the processes started here are still stopped
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--group-size", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from verl.trainer.ppo.ray_trainer import compute_advantage

    rng = np.random.default_rng(0)
    batch_size = 2 * args.group_size
    ensure_run_token()  # run-api and this process's client share it
    with RunApiProcess() as api:
        print(f"run-api (pid {api.process.pid}) at {api.url}")
        client = AtroposEnvironmentClient({"api_url": api.url, "max_wait_time": 20.0})
        client.register(batch_size=batch_size, max_token_len=64, num_steps=args.batches)
        assert client.get_batch() is None  # the first /batch call opens /register-env to environments
        with_adv = register_env(api.url, name="with_advantages", weight=0.7, group_size=args.group_size, max_token_length=64)
        plain = register_env(api.url, name="plain", weight=0.3, group_size=args.group_size, max_token_length=64)
        bad = synthetic_group(rng, args.group_size, False)
        bad["masks"][0] = bad["masks"][0][:-1]
        post_groups(api.url, [bad], env_id=plain)
        for _ in range(args.batches):
            post_groups(api.url, [synthetic_group(rng, args.group_size, True)], env_id=with_adv)
            post_groups(api.url, [synthetic_group(rng, args.group_size, False)], env_id=plain)
        for step in range(args.batches):
            batch = client.poll_batch()
            if batch is None:
                print("no more batches")
                break
            data = scored_data_to_dataproto(batch.groups, pad_token_id=0, max_prompt_length=8, max_response_length=12)
            data = compute_advantage(data, adv_estimator="grpo")
            b = data.batch
            print(
                f"batch {step}: {batch.num_sequences} sequences from {len(batch.groups)} groups, "
                f"{len(batch.invalid)} dropped ({'; '.join(i.message for i in batch.invalid) or 'none'}), "
                f"override rows {int(b['advantage_override_mask'].sum())}, "
                f"mean |advantage| {float(b['advantages'].abs().sum() / b['response_mask'].sum()):.3f}, "
                f"waited {batch.wait_s * 1000:.0f} ms"
            )
        print(f"client stats: {client.stats}")


if __name__ == "__main__":
    main()
