"""`code`: write a small Python function; scored by running it on tests (1 if all pass, else 0).

Candidates run in a limited subprocess (`code_sandbox.py`: timeout, CPU, memory, file limits). The
code is the last fenced ```python block of the answer, or the whole answer when there is none.

Run: `python -m recipe.atropos.envs.code_env serve --env.rollout_server_url URL
--openai.base_url http://HOST:PORT/v1 --slurm false`.
"""

from __future__ import annotations

import re

from pydantic import Field

from recipe.atropos.envs.chat_task_env import ChatTaskEnv, ChatTaskEnvConfig, TaskItem
from recipe.atropos.envs.code_sandbox import SandboxLimits, run_tests
from recipe.atropos.envs.code_tasks import CODE_TASKS

_FENCED = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(answer: str) -> str:
    blocks = _FENCED.findall(answer)
    return blocks[-1] if blocks else answer


class CodeEnvConfig(ChatTaskEnvConfig):
    timeout_s: float = Field(default=5.0, description="Wall-clock limit of one candidate's test run.")
    memory_mb: int = Field(default=512, description="Address-space limit of a test run.")


class CodeEnv(ChatTaskEnv):
    name = "code"
    env_config_cls = CodeEnvConfig
    system_prompt = "Answer with the Python function only, in a ```python code block."

    def load_items(self) -> list[TaskItem]:
        return [TaskItem(prompt, tests) for _, prompt, tests in CODE_TASKS]

    async def score(self, completion: str, item: TaskItem) -> float:
        limits = SandboxLimits(timeout_s=self.config.timeout_s, memory_bytes=self.config.memory_mb * 1024**2)
        result = await run_tests(extract_code(completion), list(item.reference), limits)
        return 1.0 if result.total and result.passed == result.total else 0.0


if __name__ == "__main__":
    CodeEnv.cli()
