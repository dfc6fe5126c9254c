"""A BaseEnv for single-turn tasks: a chat prompt per item, `group_size` answers from the policy
server, each scored by the subclass. GSM8K, math and code build on it.

Completions are generated through `ManagedServer.chat_completion` (token ids, masks and
`inference_logprobs` exactly as the server produced them) and posted as one group per item.
`--env.scores_log PATH` appends every group's scores and its item's key as a JSON line, also those
Atropos's filters (`ensure_scores_are_not_same`) keep from the trainer: the reward of what the policy
samples, per item (an item served again is compared with itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from atroposlib.envs.base import APIServerConfig, BaseEnv, BaseEnvConfig, ScoredDataGroup
from pydantic import Field

from recipe.atropos.envs.env_defaults import default_env_config
from recipe.atropos.policy_server.template_framing import chat_ids

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class TaskItem:
    prompt: str
    reference: Any  # what `score` compares against (an answer, tests)


def prompt_digest(prompt: str) -> str:
    """A stable 16-hex-digit key of a prompt (the same in every run and process)."""
    return hashlib.blake2b(prompt.encode(), digest_size=8).hexdigest()


class ChatTaskEnvConfig(BaseEnvConfig):
    seed: int = Field(default=0, description="Seed of the task generator and item order.")
    num_items: int = Field(default=500, description="Items generated (or loaded) at setup.")
    max_completion_tokens: int = Field(default=512, description="Tokens generated per answer.")
    max_prompt_tokens: int | None = Field(default=None, description=(
        "Serve only items whose chat prompt fits this many tokens (set it to the trainer's "
        "data.max_prompt_length: the trainer drops a group with a longer prompt). None: all items."))
    temperature: float = Field(default=1.0, description="Sampling temperature.")
    scores_log: str | None = Field(default=None, description=(
        "Append each scored group's scores as a JSON line here, sent to the API or not."))


class ChatTaskEnv(BaseEnv):
    """Subclasses set `name`, `system_prompt` and implement `load_items` and `score`."""

    env_config_cls = ChatTaskEnvConfig
    system_prompt = ""

    @classmethod
    def config_init(cls) -> tuple[ChatTaskEnvConfig, list[APIServerConfig]]:
        return default_env_config(cls.env_config_cls, cls.name)

    def load_items(self) -> list[TaskItem]:
        raise NotImplementedError

    async def score(self, completion: str, item: TaskItem) -> float:
        raise NotImplementedError

    async def setup(self) -> None:
        self.items = self.items_that_fit(self.load_items())
        if not self.items:
            raise ValueError(f"{self.name}: no task items loaded")
        self.rng = random.Random(self.config.seed)
        self.order: list[int] = []
        if self.config.scores_log:
            Path(self.config.scores_log).parent.mkdir(parents=True, exist_ok=True)

    def prompt_tokens(self, item: TaskItem) -> int:
        return len(chat_ids(self.tokenizer, self.messages(item), add_generation_prompt=True))

    def items_that_fit(self, items: list[TaskItem]) -> list[TaskItem]:
        """`items` without those whose prompt is longer than max_prompt_tokens (logged with their count)."""
        limit = self.config.max_prompt_tokens
        if limit is None:
            return items
        fitting = [item for item in items if self.prompt_tokens(item) <= limit]
        if len(fitting) < len(items):
            logger.warning("%s: %d of %d items have a chat prompt over --env.max_prompt_tokens=%d tokens and are not "
                           "served", self.name, len(items) - len(fitting), len(items), limit)
        return fitting

    async def get_next_item(self) -> TaskItem:
        if not self.order:
            self.order = list(range(len(self.items)))
            self.rng.shuffle(self.order)
        return self.items[self.order.pop()]

    def messages(self, item: TaskItem) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, {"role": "user", "content": item.prompt}]

    async def collect_trajectories(self, item: TaskItem) -> tuple[ScoredDataGroup, list[Any]]:
        cfg = self.config
        async with self.server.managed_server(tokenizer=self.tokenizer) as managed:
            completion = await managed.chat_completion(messages=self.messages(item), n=cfg.group_size,
                                                       max_tokens=cfg.max_completion_tokens, temperature=cfg.temperature)
            nodes = managed.get_state()["nodes"]
        group = ScoredDataGroup(tokens=[], masks=[], scores=[], inference_logprobs=[], advantages=[],
                                overrides=[], group_overrides={},
                                # the trainer recomputes log-probs at the temperature stated here
                                generation_params={"temperature": cfg.temperature})
        for choice, node in zip(completion.choices, nodes):
            group["tokens"].append(node.tokens)
            group["masks"].append(node.masked_tokens)
            group["inference_logprobs"].append(node.logprobs)
            group["scores"].append(await self.score(choice.message.content or "", item))
        if cfg.scores_log:
            with open(cfg.scores_log, "a") as log:
                log.write(json.dumps({"time": time.time(), "item": prompt_digest(item.prompt),
                                      "scores": group["scores"]}) + "\n")
        return group, []

    async def evaluate(self, *args: Any, **kwargs: Any) -> None:
        return None
