"""A BaseEnv that needs no inference server: completions are drawn from a seeded generator.

For smoke and fault tests of the trainer side: it registers, throttles and posts through
atroposlib's own machinery exactly as a real environment does, but its "policy" is a fixed
random process, so nothing learns. Every `advantages_every`-th group carries per-token
advantages (exercising the override path); the others leave `advantages` empty, as BaseEnv's
default `collect_trajectories` does. Every `teacher_every`-th group carries a teacher's top-2 at
each completion position (`distill_token_ids` / `distill_logprobs`) that puts `teacher_mass` on
`teacher_token_text`: on-policy distillation from a teacher that knows one answer. In every
`sft_every`-th group without a teacher, the even rows are a demonstration, `sft_token_text` repeated, marked for
supervised learning (`overrides[i]["sft"]`). With `ref_logprob_value` set, every row carries
`ref_logprobs` of that value at each token (reference log-probs computed on the environment's side).

Run: `python -m recipe.atropos.envs.scripted_env serve --env.rollout_server_url URL
--env.tokenizer_name DIR --env.group_size 4 --env.use_wandb false --slurm false`.
"""

from __future__ import annotations

import math
import random
from typing import Any

from atroposlib.envs.base import APIServerConfig, BaseEnv, BaseEnvConfig, ScoredDataGroup
from pydantic import Field


class ScriptedEnvConfig(BaseEnvConfig):
    seed: int = Field(default=0, description="Seed of the completion generator.")
    prompt_tokens: int = Field(default=8, description="Prompt length in tokens.")
    response_tokens: int = Field(default=16, description="Longest completion in tokens.")
    advantages_every: int = Field(default=2, description="Every n-th group carries per-token advantages (0: never).")
    target_token_text: str = Field(default=" yes", description="Score = share of completion tokens equal to this token.")
    teacher_every: int = Field(default=0, description="Every n-th group carries the teacher's top-2 (0: never).")
    teacher_token_text: str = Field(default=" no", description="The token the teacher puts its mass on.")
    teacher_mass: float = Field(default=0.98, description="The teacher's probability of that token.")
    sft_every: int = Field(default=0, description="Every n-th group without a teacher has demonstration rows marked "
                                                  "sft (0: never).")
    sft_token_text: str = Field(default=" ok", description="The token a demonstration repeats.")
    ref_logprob_value: float | None = Field(default=None, description="ref_logprobs of every token (None: not sent).")
    ref_every: int = Field(default=1, description="With ref_logprob_value: every n-th group carries them.")


class ScriptedEnv(BaseEnv):
    name = "scripted"
    env_config_cls = ScriptedEnvConfig

    @classmethod
    def config_init(cls) -> tuple[ScriptedEnvConfig, list[APIServerConfig]]:
        config = ScriptedEnvConfig(
            tokenizer_name="Qwen/Qwen2.5-0.5B-Instruct",
            wandb_name=cls.name,
            group_size=4,
            use_wandb=False,
            max_token_length=256,
            batch_size=-1,
            total_steps=1_000_000,
            ensure_scores_are_not_same=False,
        )
        # A list (not one config): otherwise --openai.base_url is ignored. No server is called.
        return config, [APIServerConfig(model_name="scripted", base_url="http://127.0.0.1:1/v1", api_key="unused", health_check=False)]

    async def setup(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.groups_made = 0
        self.target_id = self.tokenizer.encode(self.config.target_token_text, add_special_tokens=False)[0]
        self.vocab_top = min(len(self.tokenizer), 20_000)
        self.teacher_ids = [self.tokenizer.encode(self.config.teacher_token_text, add_special_tokens=False)[0], 100]
        mass = self.config.teacher_mass
        self.sft_id = self.tokenizer.encode(self.config.sft_token_text, add_special_tokens=False)[0]
        self.teacher_logprobs = [math.log(mass), math.log(1.0 - mass)]

    async def get_next_item(self) -> int:
        self.groups_made += 1
        return self.groups_made

    async def collect_trajectories(self, item: int) -> tuple[ScoredDataGroup, list[Any]]:
        cfg = self.config
        prompt = [self.rng.randrange(100, self.vocab_top) for _ in range(cfg.prompt_tokens)]
        with_advantages = cfg.advantages_every > 0 and item % cfg.advantages_every == 0
        with_teacher = cfg.teacher_every > 0 and item % cfg.teacher_every == 0
        with_sft = cfg.sft_every > 0 and item % cfg.sft_every == 0 and not with_teacher
        with_ref = cfg.ref_logprob_value is not None and cfg.ref_every > 0 and item % cfg.ref_every == 0
        group = ScoredDataGroup(tokens=[], masks=[], scores=[], advantages=[], overrides=[], group_overrides={})
        for row in range(cfg.group_size):
            length = self.rng.randint(2, cfg.response_tokens)
            completion = [
                self.target_id if self.rng.random() < 0.3 else self.rng.randrange(100, self.vocab_top)
                for _ in range(length)
            ]
            demonstration = with_sft and row % 2 == 0
            if demonstration:
                completion = [self.sft_id] * length
            group["overrides"].append({"sft": True} if demonstration else {})
            if with_ref:
                group.setdefault("ref_logprobs", []).append([cfg.ref_logprob_value] * (len(prompt) + length))
            score = sum(token == self.target_id for token in completion) / length
            group["tokens"].append(prompt + completion)
            group["masks"].append([-100] * len(prompt) + completion)
            group["scores"].append(score)
            if with_advantages:
                group["advantages"].append([0.0] * len(prompt) + [score - 0.3] * length)
            if with_teacher:  # [position][k]; prompt positions hold none, as vLLM's first one
                group.setdefault("distill_token_ids", []).append([[]] * len(prompt) + [self.teacher_ids] * length)
                group.setdefault("distill_logprobs", []).append([[]] * len(prompt) + [self.teacher_logprobs] * length)
        return group, []

    async def evaluate(self, *args: Any, **kwargs: Any) -> None:
        return None


if __name__ == "__main__":
    ScriptedEnv.cli()
