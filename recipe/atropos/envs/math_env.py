"""`math`: arithmetic and algebra problems with numeric answers, scored 1 if right, else 0.

Offline data from `reasoning-gym`'s seeded generators, chosen by `--env.preset`:
- `mixed` (default): `basic_arithmetic`, `chain_sum`, `simple_equations`, mixed evenly;
- `two_digit_add_sub`: `a + b` / `a - b` with one- or two-digit operands, the task a small model can
  partly do (SmolLM2-135M-Instruct: 23.5% greedy on 200 problems; the CPU math demo).

`--env.heldout_share` keeps a fixed share of the problem space out of training, by a digest of the
question: `heldout_items` gives problems only from that share (the demo's held-out evaluation), so
the two never meet whatever the seeds.

Run: `python -m recipe.atropos.envs.math_env serve --env.rollout_server_url URL
--openai.base_url http://HOST:PORT/v1 --slurm false`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from recipe.atropos.envs.answer_scoring import score_answer
from recipe.atropos.envs.chat_task_env import ChatTaskEnv, ChatTaskEnvConfig, TaskItem, prompt_digest

# preset -> [(reasoning-gym generator, its config)]; the generators are mixed evenly.
PRESETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "mixed": [("basic_arithmetic", {}), ("chain_sum", {}), ("simple_equations", {})],
    "two_digit_add_sub": [("basic_arithmetic", {
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2, "operators": ("+", "-"),
        "allow_negation": False, "allow_parentheses": False})],
}
SYSTEM_PROMPT = "Solve the problem. Put the final numeric answer in \\boxed{}."


def is_heldout(question: str, heldout_share: float) -> bool:
    """Whether `question` belongs to the held-out share of the problem space (stable across runs)."""
    return int(prompt_digest(question), 16) / 2**64 < heldout_share


def _generate(preset: str, size: int, seed: int) -> list[TaskItem]:
    import reasoning_gym

    if preset not in PRESETS:
        raise ValueError(f"math env: unknown preset {preset!r}; known: {sorted(PRESETS)}")
    generators = PRESETS[preset]
    per_generator = max(1, size // len(generators))
    items = []
    for offset, (name, settings) in enumerate(generators):
        for entry in reasoning_gym.create_dataset(name, size=per_generator, seed=seed + offset, **settings):
            answer = str(entry["answer"]).split("=")[-1].strip()  # simple_equations answers may read "x = 3"
            items.append(TaskItem(entry["question"], answer))
    return items


def math_items(size: int, seed: int, preset: str = "mixed", heldout_share: float = 0.0) -> list[TaskItem]:
    """About `size` training problems (fewer by the held-out share)."""
    return [item for item in _generate(preset, size, seed) if not is_heldout(item.prompt, heldout_share)]


def heldout_items(size: int, seed: int, preset: str, heldout_share: float) -> list[TaskItem]:
    """`size` distinct problems from the held-out share, none of which `math_items` ever gives."""
    if not 0 < heldout_share < 1:
        raise ValueError(f"heldout_share must be in (0, 1), got {heldout_share}")
    items, seen, batch = [], set(), 0
    while len(items) < size:
        for item in _generate(preset, max(size, 64) * 4, seed + 1000 * batch):
            if is_heldout(item.prompt, heldout_share) and item.prompt not in seen and len(items) < size:
                seen.add(item.prompt)
                items.append(item)
        batch += 1
        if batch > 100:
            raise ValueError(f"math env: preset {preset!r} has fewer than {size} held-out problems")
    return items


class MathEnvConfig(ChatTaskEnvConfig):
    preset: str = Field(default="mixed", description=f"Problem mix: one of {sorted(PRESETS)}.")
    heldout_share: float = Field(default=0.0, ge=0.0, lt=1.0,
                                 description="Share of the problem space never served (kept for evaluation).")


class MathEnv(ChatTaskEnv):
    name = "math"
    env_config_cls = MathEnvConfig
    system_prompt = SYSTEM_PROMPT

    def load_items(self) -> list[TaskItem]:
        return math_items(self.config.num_items, self.config.seed, self.config.preset, self.config.heldout_share)

    async def score(self, completion: str, item: TaskItem) -> float:
        return score_answer(completion, item.reference)


if __name__ == "__main__":
    MathEnv.cli()
