"""`learnable`: a task a tiny random model climbs within minutes on CPU (demo and tests).

The reward is a format reward: the share of completion tokens that are lowercase ASCII word
pieces (`"the"`, `" cat"`, `word_pieces.py`; about 27% of the Qwen2 vocabulary, so a random policy
scores about 0.27 with real spread inside a group). The demo model is built with
`word_piece_direction` so that a 2-layer random model can learn it in tens of steps.

Completions come from the policy server verl exposes
(`--openai.base_url`, Atropos's `/generate` contract through `ManagedServer`), so the score only
climbs when the served weights follow the trainer's updates.

With `--env.token_advantages true` each group also carries per-token advantages (token reward
minus the group's mean score), exercising the override path; `inference_logprobs` always come
from the server.

Run: `python -m recipe.atropos.envs.learnable_env serve --env.rollout_server_url URL
--openai.base_url http://HOST:PORT/v1 --env.group_size 8 --slurm false`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from atroposlib.envs.base import APIServerConfig, BaseEnv, BaseEnvConfig, ScoredDataGroup
from pydantic import Field

from recipe.atropos.envs.env_defaults import default_env_config
from recipe.atropos.envs.word_pieces import word_piece_ids
PROMPTS = (
    "Write a few plain English words:",
    "Say something in lowercase words:",
    "List some simple words:",
    "Continue with ordinary words:",
)


class LearnableEnvConfig(BaseEnvConfig):
    seed: int = Field(default=0, description="Seed of the prompt order.")
    max_completion_tokens: int = Field(default=16, description="Tokens generated per completion.")
    temperature: float = Field(default=1.0, description="Sampling temperature.")
    token_advantages: bool = Field(default=False, description="Send per-token advantages with every group.")
    score_delay_s: float = Field(default=0.0, ge=0.0, description="Seconds each group's scoring takes after its "
                                 "completions come back (a slow environment, for benchmarks and tests).")


class LearnableEnv(BaseEnv):
    name = "learnable"
    env_config_cls = LearnableEnvConfig

    @classmethod
    def config_init(cls) -> tuple[LearnableEnvConfig, list[APIServerConfig]]:
        return default_env_config(LearnableEnvConfig, cls.name, max_token_length=64)

    async def setup(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.word_piece_ids = word_piece_ids(self.tokenizer)

    async def get_next_item(self) -> str:
        return self.rng.choice(PROMPTS)

    def token_rewards(self, completion_ids: list[int]) -> list[float]:
        return [1.0 if token in self.word_piece_ids else 0.0 for token in completion_ids]

    async def collect_trajectories(self, item: str) -> tuple[ScoredDataGroup, list[Any]]:
        cfg = self.config
        async with self.server.managed_server(tokenizer=self.tokenizer) as managed:
            await managed.completion(prompt=item, n=cfg.group_size, max_tokens=cfg.max_completion_tokens,
                                     temperature=cfg.temperature)
            nodes = managed.get_state()["nodes"]
        if cfg.score_delay_s:
            await asyncio.sleep(cfg.score_delay_s)
        group = ScoredDataGroup(tokens=[], masks=[], scores=[], inference_logprobs=[], advantages=[],
                                overrides=[], group_overrides={},
                                # the trainer recomputes log-probs at the temperature stated here
                                generation_params={"temperature": cfg.temperature})
        rewards = []
        for node in nodes:
            completion = [token for token in node.masked_tokens if token != -100]
            per_token = self.token_rewards(completion)
            rewards.append(per_token)
            group["tokens"].append(node.tokens)
            group["masks"].append(node.masked_tokens)
            group["inference_logprobs"].append(node.logprobs)
            group["scores"].append(sum(per_token) / max(1, len(per_token)))
        if cfg.token_advantages and nodes:
            mean = sum(group["scores"]) / len(group["scores"])
            for node, per_token in zip(nodes, rewards):
                prompt_len = len(node.tokens) - len(per_token)
                group["advantages"].append([0.0] * prompt_len + [reward - mean for reward in per_token])
        return group, []

    async def evaluate(self, *args: Any, **kwargs: Any) -> None:
        return None


if __name__ == "__main__":
    LearnableEnv.cli()
