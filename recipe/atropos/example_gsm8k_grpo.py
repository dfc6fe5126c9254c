"""GRPO on Atropos environments from Python: the knobs of run_qwen2_5-3b_atropos_grpo.sh as a dict.

    python -m recipe.atropos.example_gsm8k_grpo actor_rollout_ref.model.path=/models/qwen [more overrides]

Edit KNOBS (or pass Hydra overrides as arguments); `build_config` composes the recipe config, so
every key is checked against verl's schema before anything starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from recipe.atropos.main_atropos import run_atropos

CONFIG_DIR = Path(__file__).resolve().parent / "config"

KNOBS: dict[str, object] = {
    "trainer.atropos.api_url": "http://localhost:8000",
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-3B-Instruct",
    "actor_rollout_ref.model.lora_rank": 64,
    "actor_rollout_ref.model.lora_alpha": 32,
    "actor_rollout_ref.actor.optim.lr": 3e-6,
    "data.train_batch_size": 64,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 32,
    "actor_rollout_ref.rollout.n": 8,
    "data.max_prompt_length": 512,
    "data.max_response_length": 1024,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.rollout.name": "vllm",
    "trainer.total_training_steps": 500,
    "trainer.n_gpus_per_node": 8,
    "trainer.nnodes": 1,
}


def build_config(knobs: dict[str, object] = KNOBS, overrides: list[str] | None = None) -> DictConfig:
    """The recipe config with `knobs` applied, then `overrides` (Hydra syntax; they win)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("gsm8k_grpo_example", overrides=[f"{k}={v}" for k, v in knobs.items()] + list(overrides or []))


def main(argv: list[str] | None = None) -> None:
    run_atropos(build_config(overrides=sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
