"""The policy server environments call: Atropos's `/generate` contract (through atroposlib's own
`VLLMServer` client), OpenAI completions/chat (through the `openai` client), policy versions, and
the weight-sync gate (drain, bounded wait, drain timeout counted).

The replica is verl_patches' real `HFCPUServer` with the tiny random Qwen2, used in-process
instead of as a Ray actor (the proxy calls the same methods either way), behind the real HTTP app
(conftest's `policy_server`).
"""

import asyncio
import threading
import time

import aiohttp
import pytest
import requests
import torch
from transformers import AutoModelForCausalLM

from recipe.atropos.auth.run_token import make_run_token
from recipe.atropos.tests.helpers.policy_server_helpers import serving


@pytest.fixture
def served(policy_server):
    return policy_server


def test_atropos_vllm_client_gets_tokens_logprobs_and_versions(served):
    from atroposlib.envs.server_handling.server_baseline import APIServerConfig
    from atroposlib.envs.server_handling.vllm_server import VLLMServer

    served.server.set_global_steps(3)
    served.proxy.policy_version = 3  # as the trainer's resume after a sync sets it
    client = VLLMServer(APIServerConfig(model_name="policy", tokenizer_name=str(served.model_dir), server_type="vllm",
                                        base_url=f"{served.url}/v1", api_key="verl", health_check=False))
    prompt_ids = [9707, 1879, 11, 1052]
    prompt, outputs, logprobs, finish = asyncio.run(client._tokens_and_logprobs_completion_wrapper(
        model="policy", input_ids=prompt_ids, n=4, max_tokens=6, temperature=0.0))
    assert prompt == prompt_ids and len(outputs) == len(logprobs) == len(finish) == 4
    assert outputs[0] == outputs[1] and 1 <= len(outputs[0]) <= 6  # greedy: identical rows
    assert set(finish) <= {"stop", "length"}

    model = AutoModelForCausalLM.from_pretrained(served.model_dir).eval()
    with torch.no_grad():
        full = model(torch.tensor([prompt_ids + outputs[0]])).logits[0]
    expected = [float(torch.log_softmax(full[len(prompt_ids) - 1 + i], -1)[t]) for i, t in enumerate(outputs[0])]
    assert logprobs[0] == pytest.approx(expected, abs=1e-4)
    assert served.proxy.registry.lookup(outputs[0]) == 3  # the version that produced it
    health = requests.get(f"{served.url}/health", timeout=5).json()
    assert health["accepting_requests"] is True


def test_atropos_sglang_client_gets_tokens_and_logprobs(served):
    """`--openai.server_type sglang`: atroposlib's own SGLangServer posts SGLang's native /generate."""
    from atroposlib.envs.server_handling.server_baseline import APIServerConfig
    from atroposlib.envs.server_handling.sglang_server import SGLangServer

    client = SGLangServer(APIServerConfig(model_name="policy", tokenizer_name=str(served.model_dir), server_type="sglang",
                                          base_url=f"{served.url}/v1", api_key="verl", health_check=False))
    prompt_ids = [9707, 1879, 11, 1052]
    for n in (1, 3):  # SGLang answers one object for n=1, a list otherwise
        prompt, outputs, logprobs, finish = asyncio.run(client._tokens_and_logprobs_completion_wrapper(
            model="policy", input_ids=list(prompt_ids), n=n, max_tokens=5, temperature=0.0))
        assert prompt == prompt_ids and len(outputs) == len(logprobs) == len(finish) == n
        assert all(1 <= len(o) <= 5 and len(o) == len(lp) for o, lp in zip(outputs, logprobs))
        assert all(reason["type"] in ("stop", "length") for reason in finish)
    model = AutoModelForCausalLM.from_pretrained(served.model_dir).eval()
    with torch.no_grad():
        full = model(torch.tensor([prompt_ids + outputs[0]])).logits[0]
    expected = [float(torch.log_softmax(full[len(prompt_ids) - 1 + i], -1)[t]) for i, t in enumerate(outputs[0])]
    assert logprobs[0] == pytest.approx(expected, abs=1e-4)
    assert served.proxy.registry.lookup(outputs[0]) is not None  # its policy version is known


def test_atropos_trl_client_gets_completions_with_the_runs_token(tiny_model_dir):
    """`--openai.server_type trl`: atroposlib's own TrlVllmServer, with the compat fix run_env applies
    (its sessions send `api_key` and raise on an error answer), posts `/generate/` to a policy server
    that needs the run's token. (Unfixed, atroposlib 0.4.0 sends no credentials and reads the 401 body
    as a completion: KeyError 'completion_ids'; another test may have installed the fix in this
    process already, so that is not asserted here.)"""
    from atroposlib.envs.server_handling.server_baseline import APIServerConfig
    from atroposlib.envs.server_handling.trl_vllm_server import TrlVllmServer

    from recipe.atropos.envs.atropos_compat import trl_credentials

    token = make_run_token()
    with serving(tiny_model_dir, token=token) as served:
        assert trl_credentials.install()
        for base_url in (served.url, f"{served.url}/v1"):  # its client keeps /v1 when given one
            client = TrlVllmServer(APIServerConfig(model_name=str(served.model_dir), server_type="trl",
                                                   base_url=base_url, api_key=token, health_check=False))
            completion = asyncio.run(client._completion_wrapper(prompt="Hello there", n=3, max_tokens=4))
            assert len(completion.choices) == 3 and all(choice.text for choice in completion.choices)
            chat = asyncio.run(client._chat_completion_wrapper(messages=[{"role": "user", "content": "Hi"}],
                                                               n=2, max_tokens=4))
            assert len(chat.choices) == 2
        wrong = TrlVllmServer(APIServerConfig(model_name=str(served.model_dir), server_type="trl",
                                              base_url=served.url, api_key="not-the-token", health_check=False))
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            asyncio.run(wrong._completion_wrapper(prompt="Hello", n=1, max_tokens=4))
        assert refused.value.status == 401


def test_openai_completions_and_chat(served):
    import openai

    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="verl")
    completion = client.completions.create(model="policy", prompt="Hello there", n=3, max_tokens=5, logprobs=1)
    assert len(completion.choices) == 3
    for choice in completion.choices:
        assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) <= 5
        assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    chat = client.chat.completions.create(model="policy", messages=[{"role": "user", "content": "hi"}],
                                          n=2, max_tokens=4, logprobs=True)
    assert len(chat.choices) == 2 and isinstance(chat.choices[0].message.content, str)
    assert 1 <= len(chat.choices[0].logprobs.content) <= 4
    assert chat.usage.completion_tokens == sum(len(c.logprobs.content) for c in chat.choices)
    assert [m.id for m in client.models.list().data] == ["policy"]


def test_bad_requests_name_the_field(served):
    def post(path, body):
        return requests.post(f"{served.url}{path}", json=body, timeout=10)

    answer = post("/generate", {"prompt": {"prompt_token_ids": [1, 2, 10**9]}, "max_tokens": 2})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "prompt.prompt_token_ids"
    answer = post("/v1/completions", {"model": "policy", "prompt": "x", "n": 0})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "n"
    answer = post("/v1/chat/completions", {"model": "policy", "messages": "hi"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "messages"
    answer = post("/generate", {"prompt": {"prompt_token_ids": list(range(100, 600))}})
    assert answer.status_code == 400 and "no room" in answer.json()["error"]["message"]
    # What hf_cpu does not apply is refused, not ignored; its neutral value, and what it applies, pass.
    for key, value in (("repetition_penalty", 1.3), ("stop", ["\n"]), ("presence_penalty", 0.5)):
        answer = post("/v1/completions", {"model": "policy", "prompt": "x", "max_tokens": 2, key: value})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == key, answer.text
        assert "not applied by the hf_cpu rollout" in answer.json()["error"]["message"]
    answer = post("/v1/completions", {"model": "policy", "prompt": "x", "max_tokens": 2, "repetition_penalty": 1.0,
                                      "stop": [], "min_p": 0.1, "min_tokens": 1, "seed": 3})
    assert answer.status_code == 200, answer.text


def _generate_in_thread(url, results, max_tokens=16):
    def run():
        answer = requests.post(f"{url}/generate", json={"prompt": {"prompt_token_ids": [1, 2, 3]}, "n": 4,
                                                        "max_tokens": max_tokens, "logprobs": 0, "ignore_eos": True},
                               timeout=60)
        results.append((time.monotonic(), answer.status_code, answer.json()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_gate_drains_in_flight_requests_and_holds_new_ones_until_the_new_version(served):
    results = []
    first = _generate_in_thread(served.url, results)
    while served.proxy.in_flight == 0:
        time.sleep(0.005)
    assert served.service.pause(drain_timeout=30.0) is True  # waited for the request in flight
    assert served.proxy.in_flight == 0 and served.proxy.stats.completions == 4
    first.join(30)
    assert len(results) == 1 and results[0][2]["policy_version"] == 0
    waiting = _generate_in_thread(served.url, results)
    time.sleep(0.5)
    assert len(results) == 1  # held at the closed gate
    served.server.set_global_steps(5)  # the new weights are in place before the gate opens, as in the trainer's sync
    opened_at = time.monotonic()
    served.service.resume(policy_version=5)
    waiting.join(30)
    assert results[1][0] >= opened_at and results[1][1] == 200
    assert results[1][2]["policy_version"] == 5
    assert requests.get(f"{served.url}/health", timeout=5).json()["policy_version"] == 5


def test_drain_timeout_is_counted_not_raised_and_a_long_wait_gets_503(served):
    results = []
    with served.server._lock:  # the replica is busy: the request stays in flight until the lock is let go
        slow = _generate_in_thread(served.url, results, max_tokens=8)
        while served.proxy.in_flight == 0:
            time.sleep(0.005)
        assert served.service.pause(drain_timeout=0.01) is False
    assert served.proxy.stats.drain_timeouts == 1
    served.proxy.request_wait_timeout = 0.2
    rejected = requests.post(f"{served.url}/generate", json={"prompt": {"prompt_token_ids": [1, 2]}, "max_tokens": 2},
                             timeout=10)
    assert rejected.status_code == 503 and served.proxy.stats.rejected_requests == 1
    served.service.resume()
    slow.join(60)
    assert results and results[0][1] == 200


def test_gate_only_pause_returns_at_once_and_still_holds_new_requests(served):
    """hf_cpu's sync: the gate closes without waiting; the request in flight completes meanwhile."""
    results = []
    with served.server._lock:  # the replica is busy: the request stays in flight until the lock is let go
        first = _generate_in_thread(served.url, results, max_tokens=8)
        while served.proxy.in_flight == 0:
            time.sleep(0.005)
        assert served.service.pause(drain_timeout=30.0, wait=False) is True
        assert served.proxy.in_flight == 1  # returned while the request was still decoding
    assert served.proxy.stats.drain_timeouts == 0
    held = _generate_in_thread(served.url, results)
    first.join(60)
    time.sleep(0.3)
    assert len(results) == 1 and results[0][1] == 200  # the in-flight one finished, the new one waits
    served.service.resume(policy_version=2)
    held.join(60)
    assert len(results) == 2 and results[1][1] == 200
