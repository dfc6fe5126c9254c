"""Fixes of atroposlib 0.4.0 from pull requests it never merged (run_env applies them). One probe runs
atroposlib's own code in two fresh processes, one with the fixes installed and one without (another
test of the session may have applied them in this one), and each test compares the two:
- `single_retry` (#487): a failing chat completion is tried 3 times, not 9 (a 3-attempt retry around
  two 3-attempt retries); tenacity's back-off waits are set to zero (only attempts are counted);
- `grpo_std` (#481): GRPO advantages of constant float rewards raise the documented ValueError
  ("std is smaller than tolerance"), not a TypeError from a complex standard deviation;
- `combined_reward_weights` (#485): `CombinedReward` sums its sub-rewards times their weights;
- `tool_call_quotes` (#479/#536): a tool call with an apostrophe in an argument parses;
- `trajectory_truncation` (#483): a short alternative beside a long one keeps its observation and answer;
- `reward_registry` (#482): `registry.create("r1")` is an R1Reward;
- `evicted_item` (#538): `handle_env` of an evicted item returns None."""

import json
import subprocess
import sys

import pytest

PROBE = r"""
import asyncio, json, sys, types

import tenacity

from atroposlib.envs.base import BaseEnv
from atroposlib.envs.reward_fns import CombinedReward, RewardFunction, registry
from atroposlib.envs.server_handling.server_baseline import APIServer, APIServerConfig
from atroposlib.utils import message_history_utils, tool_call_parser
from atroposlib.utils.advantages import compute_grpo_process_supervision_advantages
from transformers import AutoTokenizer

from recipe.atropos.envs.atropos_compat import chat_template
from recipe.atropos.envs.qwen_tokenizer import qwen_tokenizer_dir

chat_template.install()  # tokenize_for_trainer under transformers 5; not one of the fixes compared here
if sys.argv[1] == "fixed":
    from recipe.atropos.envs.atropos_compat import (combined_reward_weights, evicted_item, grpo_std,
                                                    reward_registry, single_retry, tool_call_quotes,
                                                    trajectory_truncation)
    for fix in (single_retry, grpo_std, combined_reward_weights, tool_call_quotes, trajectory_truncation,
                reward_registry, evicted_item):
        fix.install()
results = {}


def outcome(call):
    try:
        return {"value": call()}
    except Exception as exc:
        return {"raised": type(exc).__name__}


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
outcome(lambda: asyncio.run(server.chat_completion(messages=[{"role": "user", "content": "hi"}])))
results["chat_attempts"] = FailingServer.attempts

# rounding makes E[x^2] - E[x]^2 < 0 for seven rewards of -0.3
results["constant_float_rewards"] = outcome(lambda: compute_grpo_process_supervision_advantages([[-0.3] * 7]))


@registry.register(name="probe_one")
class ProbeOneReward(RewardFunction):
    def compute(self, completions, **kwargs):
        return [1.0 for _ in completions]


combined = CombinedReward(rewards=[{"type": "probe_one", "weight": 3.0}, {"type": "probe_one", "weight": 0.5}])
results["combined_scores"] = combined.compute(["a", "b"])

tools = [{"name": "search"}]
results["tool_call"] = list(tool_call_parser.parse_tool_call(
    '<tool_call>{"name": "search", "arguments": {"q": "Ada\'s engine"}}</tool_call>', tools))
results["single_quoted_tool_call"] = list(tool_call_parser.parse_tool_call(
    "<tool_call>{'name': 'search', 'arguments': {'q': \"Ada's engine\"}}</tool_call>", tools))

tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
long_answer = " ".join(["word"] * 40)


def alternative(*turns):
    messages = [{"role": "system", "content": "You play a game."}]
    for observation, answer in turns:
        messages += [{"role": "environment", "content": observation}, {"role": "assistant", "content": answer}]
    return messages


alternatives = [alternative(("start", long_answer), ("next", long_answer), ("last", "stop")),
                alternative(("start", "stop"))]
tokenized = [message_history_utils.tokenize_for_trainer(tokenizer, messages) for messages in alternatives]
step = {"seed": 1, "parsed_actions": [0, 0], "scores": [0.0, 0.0], "messages": alternatives,
        "tokens": [t["tokens"] for t in tokenized], "masks": [t["masks"] for t in tokenized]}
limit = len(tokenized[1]["tokens"]) + 20
kept = message_history_utils.ensure_trajectory_token_limit([step], tokenizer, limit)
results["truncation"] = {"steps": len(kept), "short_alternative": kept[0]["messages"][1] if kept else None,
                         "short_tokens": kept[0]["tokens"][1] if kept else None,
                         "short_tokens_before": tokenized[1]["tokens"],
                         "long_within_limit": bool(kept) and len(kept[0]["tokens"][0]) <= limit}

results["r1_reward_class"] = type(registry.create("r1")).__name__

evicted = types.SimpleNamespace(running_items={})
results["evicted_item"] = outcome(lambda: asyncio.run(BaseEnv.handle_env(evicted, "gone-uuid")))
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def probe() -> dict[str, dict]:
    """What atroposlib does without the fixes ("atroposlib") and with them ("fixed"), each in a fresh process."""
    found = {}
    for mode in ("atroposlib", "fixed"):
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULTS ")]
        assert lines, f"the {mode} probe printed no results: {out.stderr[-3000:]}"
        found[mode] = json.loads(lines[0].removeprefix("RESULTS "))
    return found


def test_a_failing_chat_completion_is_tried_three_times_with_the_fix(probe):
    assert probe["atroposlib"]["chat_attempts"] == 9
    assert probe["fixed"]["chat_attempts"] == 3


def test_grpo_advantages_of_constant_float_rewards_raise_the_documented_error(probe):
    assert probe["atroposlib"]["constant_float_rewards"] == {"raised": "TypeError"}
    assert probe["fixed"]["constant_float_rewards"] == {"raised": "ValueError"}


def test_combined_reward_applies_its_sub_rewards_weights(probe):
    assert probe["atroposlib"]["combined_scores"] == [2.0, 2.0]  # weights ignored
    assert probe["fixed"]["combined_scores"] == [3.5, 3.5]


def test_a_tool_call_with_an_apostrophe_parses(probe):
    parsed = ["search", {"q": "Ada's engine"}, False]
    assert probe["atroposlib"]["tool_call"] == ["-ERROR-", {}, True]
    assert probe["fixed"]["tool_call"] == parsed
    assert probe["fixed"]["single_quoted_tool_call"] == parsed


def test_trajectory_truncation_keeps_a_short_alternatives_observation_and_answer(probe):
    broken, fixed = probe["atroposlib"]["truncation"], probe["fixed"]["truncation"]
    assert broken["steps"] == 0 or len(broken["short_alternative"]) < 3  # the step discarded, or the short one cut
    assert fixed["steps"] == 1 and fixed["long_within_limit"]
    assert [m["role"] for m in fixed["short_alternative"]] == ["system", "environment", "assistant"]
    assert fixed["short_tokens"] == fixed["short_tokens_before"]


def test_a_reward_loaded_by_name_is_the_class_registered_under_it(probe):
    assert probe["atroposlib"]["r1_reward_class"] == "AccuracyXReward"
    assert probe["fixed"]["r1_reward_class"] == "R1Reward"


def test_the_rollout_of_an_evicted_item_returns_none(probe):
    assert probe["atroposlib"]["evicted_item"] == {"raised": "TypeError"}
    assert probe["fixed"]["evicted_item"] == {"value": None}
