"""`code`: write a small Python function; scored by calling it on the task's inputs (1 if every
result is the expected one, else 0).

Candidates run in a sandbox (`sandbox.py`: no network, nothing left running after scoring, no
project files, no privileges; timeout, CPU, memory, file limits) that returns what the function
produced; the results are judged here, against expected values that process never sees. The code is
the last fenced ```python block of the answer, or the whole answer. Where the sandbox cannot isolate
candidates (not root and no unprivileged user namespaces), the environment stops at setup with
`SandboxUnavailableError` instead of scoring every answer 0.

Run: `python -m recipe.atropos.envs.code.code_env serve --env.rollout_server_url URL
--openai.base_url http://HOST:PORT/v1 --slurm false`.
"""

from __future__ import annotations

import re

from pydantic import Field

from recipe.atropos.envs.chat_task_env import ChatTaskEnv, ChatTaskEnvConfig, TaskItem
from recipe.atropos.envs.code.sandbox import SandboxLimits, check_sandbox, run_function
from recipe.atropos.envs.code.tasks import CODE_TASKS, TASKS_BY_NAME

_FENCED = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(answer: str) -> str:
    blocks = _FENCED.findall(answer)
    return blocks[-1] if blocks else answer


async def score_code(answer: str, task_name: str, limits: SandboxLimits = SandboxLimits()) -> float:
    """The code environment's reward: 1.0 when the function in `answer` returns the expected result
    for every input of the task `task_name` (tasks.py), else 0.0; judged outside the candidate."""
    task = TASKS_BY_NAME.get(task_name)
    if task is None:
        raise KeyError(f"unknown code task {task_name!r}; known: {sorted(TASKS_BY_NAME)}")
    result = await run_function(extract_code(answer), task.function, task.inputs, task.expected, limits)
    return 1.0 if result.total and result.passed == result.total else 0.0


class CodeEnvConfig(ChatTaskEnvConfig):
    timeout_s: float = Field(default=5.0, description="Wall-clock limit of one candidate's test run.")
    memory_mb: int = Field(default=512, description="Address-space limit of a test run.")


class CodeEnv(ChatTaskEnv):
    name = "code"
    env_config_cls = CodeEnvConfig
    system_prompt = "Answer with the Python function only, in a ```python code block."

    async def setup(self) -> None:
        check_sandbox()  # raises SandboxUnavailableError, saying what to do, where candidates cannot be isolated
        await super().setup()

    def load_items(self) -> list[TaskItem]:
        return [TaskItem(task.prompt, task.name) for task in CODE_TASKS]

    async def score(self, completion: str, item: TaskItem) -> float:
        limits = SandboxLimits(timeout_s=self.config.timeout_s, memory_bytes=self.config.memory_mb * 1024**2)
        return await score_code(completion, item.reference, limits)


if __name__ == "__main__":
    CodeEnv.cli()
