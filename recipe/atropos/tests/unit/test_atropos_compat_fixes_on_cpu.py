"""Fixes of atroposlib 0.4.0 from pull requests it never merged (run_env applies them), each checked
in fresh processes with and without it, since another test of the session may have applied the fixes
in this one:
- `single_retry` (#487): a failing chat completion is tried 3 times, not 9 (a 3-attempt retry around
  two 3-attempt retries); tenacity's back-off waits are set to zero (only attempts are counted);
- `grpo_std` (#481): GRPO advantages of constant float rewards raise the documented ValueError
  ("std is smaller than tolerance"), not a TypeError from a complex standard deviation."""

import subprocess
import sys

import pytest

COUNT_ATTEMPTS = r"""
import asyncio, sys
import tenacity
from atroposlib.envs.server_handling.server_baseline import APIServer, APIServerConfig

if sys.argv[1] == "fixed":
    from recipe.atropos.envs.atropos_compat import single_retry
    single_retry.install()
for method in (APIServer._chat_comp, APIServer.chat_completion):
    if hasattr(method, "retry"):
        method.retry.wait = tenacity.wait_none()

class FailingServer(APIServer):
    attempts = 0
    async def check_server_status_task(self, chat_completion=True):
        self.server_healthy = True
    async def _chat_completion_wrapper(self, **kwargs):
        FailingServer.attempts += 1
        raise ConnectionError("the policy server is restarting")
    async def _completion_wrapper(self, **kwargs):
        raise NotImplementedError
    async def _tokens_and_logprobs_completion_wrapper(self, **kwargs):
        raise NotImplementedError

server = FailingServer(APIServerConfig(model_name="policy", base_url="http://127.0.0.1:1/v1", api_key="x",
                                       health_check=False))
try:
    asyncio.run(server.chat_completion(messages=[{"role": "user", "content": "hi"}]))
except Exception:
    pass
print("ATTEMPTS", FailingServer.attempts)
"""


def attempts(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", COUNT_ATTEMPTS, mode], capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stdout.splitlines() if line.startswith("ATTEMPTS ")]
    assert lines, out.stderr[-2000:]
    return int(lines[0].split()[1])


@pytest.mark.parametrize(("mode", "expected"), [("atroposlib", 9), ("fixed", 3)])
def test_a_failing_chat_completion_is_tried_three_times_with_the_fix(mode, expected):
    assert attempts(mode) == expected


CONSTANT_FLOAT_REWARDS = r"""
import sys
from atroposlib.utils.advantages import compute_grpo_process_supervision_advantages

if sys.argv[1] == "fixed":
    from recipe.atropos.envs.atropos_compat import grpo_std
    grpo_std.install()
try:
    compute_grpo_process_supervision_advantages([[-0.3] * 7])  # rounding makes E[x^2] - E[x]^2 < 0
except Exception as exc:
    print("RAISED", type(exc).__name__)
"""


@pytest.mark.parametrize(("mode", "expected"), [("atroposlib", "TypeError"), ("fixed", "ValueError")])
def test_grpo_advantages_of_constant_float_rewards_raise_the_documented_error(mode, expected):
    out = subprocess.run([sys.executable, "-c", CONSTANT_FLOAT_REWARDS, mode], capture_output=True, text=True,
                         timeout=120)
    assert f"RAISED {expected}" in out.stdout, out.stderr[-2000:]
