"""`math`: arithmetic and algebra problems with numeric answers, scored 1 if right, else 0.

Offline data from `reasoning-gym`'s seeded generators (`basic_arithmetic`, `chain_sum`,
`simple_equations`), mixed evenly.

Run: `python -m recipe.atropos.envs.math_env serve --env.rollout_server_url URL
--openai.base_url http://HOST:PORT/v1 --slurm false`.
"""

from __future__ import annotations

from recipe.atropos.envs.answer_scoring import score_answer
from recipe.atropos.envs.chat_task_env import ChatTaskEnv, TaskItem

GENERATORS = ("basic_arithmetic", "chain_sum", "simple_equations")


def math_items(size: int, seed: int) -> list[TaskItem]:
    import reasoning_gym

    per_generator = max(1, size // len(GENERATORS))
    items = []
    for offset, name in enumerate(GENERATORS):
        for entry in reasoning_gym.create_dataset(name, size=per_generator, seed=seed + offset):
            answer = str(entry["answer"]).split("=")[-1].strip()  # simple_equations answers may read "x = 3"
            items.append(TaskItem(entry["question"], answer))
    return items


class MathEnv(ChatTaskEnv):
    name = "math"
    system_prompt = "Solve the problem. Put the final numeric answer in \\boxed{}."

    def load_items(self) -> list[TaskItem]:
        return math_items(self.config.num_items, self.config.seed)

    async def score(self, completion: str, item: TaskItem) -> float:
        return score_answer(completion, item.reference)


if __name__ == "__main__":
    MathEnv.cli()
