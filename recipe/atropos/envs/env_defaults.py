"""Defaults of the environments we ship: offline, no wandb, and verl's policy server as inference.

Atropos's `vllm` server type (`/generate` with token ids, through `ManagedServer`), which the
trainer's policy server speaks. The launcher replaces the URL, model name and tokenizer with
`--openai.base_url`, `--openai.model_name` and `--openai.tokenizer_name`.
"""

from __future__ import annotations

from typing import Any

from atroposlib.envs.base import APIServerConfig, BaseEnvConfig

from recipe.atropos.envs.qwen_tokenizer import qwen_tokenizer_dir


def default_env_config(config_cls: type[BaseEnvConfig], name: str, **overrides: Any) -> tuple[BaseEnvConfig, list[APIServerConfig]]:
    """`config_init`'s answer for our environments: the local Qwen tokenizer, no wandb, a group of
    8, scores may tie (GRPO then gives them 0 advantage), `overrides` on top."""
    tokenizer_dir = str(qwen_tokenizer_dir())
    settings = {
        "tokenizer_name": tokenizer_dir, "wandb_name": name, "group_size": 8, "use_wandb": False,
        "max_token_length": 1024, "batch_size": -1, "total_steps": 1_000_000,
        "ensure_scores_are_not_same": False, "max_num_workers": 4, **overrides,
    }
    return config_cls(**settings), policy_server_config(tokenizer_dir)


def policy_server_config(tokenizer_dir: str, model_name: str = "policy") -> list[APIServerConfig]:
    # A list (not one config): otherwise BaseEnv ignores --openai.base_url.
    return [APIServerConfig(
        model_name=model_name,
        tokenizer_name=tokenizer_dir,
        base_url="http://127.0.0.1:9000/v1",
        server_type="vllm",
        api_key="verl",
        timeout=600,
        num_max_requests_at_once=16,
        num_requests_for_eval=4,
    )]
