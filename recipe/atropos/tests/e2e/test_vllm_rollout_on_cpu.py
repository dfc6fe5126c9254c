"""The online loop on verl's own vLLM rollout (vLLM's CPU build): the demo through the launcher, with
verl's vLLM replicas serving the `learnable` environment through the policy server and receiving the
actor's weights every step (verl_patches.vllm_cpu). While it trains, the test itself calls the policy
server (the proxy's per-sample branch over a real vLLM replica), and keeps long requests in flight with a
drain timeout far shorter than they take, so weights are pushed into vLLM while it decodes them; after
every sync the weight-sync check compares vLLM's log-probs of a greedy probe with the actor's. Runs in .venv-vllm (`scripts/setup.sh vllm`;
`.venv-vllm/bin/python -m pytest -m vllm`); skipped where vllm-cpu is not installed."""

import math
import threading

import pytest
import requests

from recipe.atropos.examples.demo_cpu import run_demo
from recipe.atropos.launcher.inference_manager import UnifiedInferenceManager
from recipe.atropos.tests.helpers.api_helpers import token_headers
from recipe.atropos.tests.helpers.launcher_helpers import SYNC_CHECK_FP32
from verl_patches.vllm_cpu import SUPPORTED_VLLM_CPU, installed_vllm_cpu

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(installed_vllm_cpu() != SUPPORTED_VLLM_CPU,
                       reason=f"needs vllm-cpu {SUPPORTED_VLLM_CPU} (scripts/setup.sh vllm, then run from .venv-vllm)"),
]

STEPS = 4
SAMPLES = 4
# Each long request decodes LONG_TOKENS tokens (seconds on CPU); two of them back to back keep vLLM busy at
# the syncs to versions 1 .. STEPS-1, and the drain waits DRAIN_TIMEOUT_S for them, so the weights change
# while they are decoded. None is sent after that, so none is cut off when the run ends.
LONG_TOKENS = 200
DRAIN_TIMEOUT_S = 0.05


def seeded_group_request(base_url: str) -> dict:
    """What an Atropos environment posts for a group: n samples of one prompt, here with a seed."""
    body = {"prompt": {"prompt_token_ids": [9707, 11, 1879, 0]}, "n": SAMPLES, "seed": 1234,
            "temperature": 1.0, "max_tokens": 8, "logprobs": 0}
    answer = requests.post(f"{base_url}/generate", json=body, timeout=300, headers=token_headers())
    answer.raise_for_status()
    return answer.json()


def served_version(base_url: str) -> int:
    return requests.get(f"{base_url}/health", timeout=60).json()["policy_version"]


def long_request(base_url: str, before: int) -> tuple[int, dict, int]:
    """(version served before it was sent, the answer, version served after it came back)."""
    body = {"prompt": {"prompt_token_ids": [9707, 11, 1879, 0]}, "n": 2, "temperature": 1.0,
            "max_tokens": LONG_TOKENS, "ignore_eos": True, "logprobs": 0}
    answer = requests.post(f"{base_url}/generate", json=body, timeout=600, headers=token_headers())
    answer.raise_for_status()
    return before, answer.json(), served_version(base_url)


def test_demo_trains_on_rollouts_served_by_verls_vllm_replicas(tmp_path):
    workdir = tmp_path / "demo"
    demo_done = threading.Event()
    answers, long_answers, probe_errors = [], [], []

    def endpoint() -> dict:
        return UnifiedInferenceManager(workdir / "inference_endpoint.json").wait_ready(
            timeout=900, alive=lambda: not demo_done.is_set())

    def probe() -> None:  # an environment-like client, beside the launcher (which needs the main thread)
        try:
            answers.extend(seeded_group_request(endpoint()["base_url"]) for _ in range(2))
        except Exception as error:  # reported by the assertion below
            probe_errors.append(repr(error))

    def keep_busy() -> None:
        try:
            base_url = endpoint()["base_url"]
            while (before := served_version(base_url)) < STEPS - 1:
                long_answers.append(long_request(base_url, before))
        except Exception as error:
            probe_errors.append(repr(error))

    clients = [threading.Thread(target=probe, name="policy-server-probe", daemon=True),
               *(threading.Thread(target=keep_busy, name=f"long-requests-{i}", daemon=True) for i in range(2))]
    for client in clients:
        client.start()
    try:
        summary = run_demo(workdir, STEPS, weight_sync=True, launcher_sets=[], rollout="vllm",
                           overrides=[*SYNC_CHECK_FP32, f"trainer.atropos_inference.drain_timeout={DRAIN_TIMEOUT_S}",
                                      # this test's own long requests ask for more than the run trains on
                                      f"trainer.atropos_inference.max_tokens={LONG_TOKENS}"])
    finally:
        demo_done.set()
        for client in clients:
            client.join()
    trainer_log = (workdir / "logs" / "trainer.log").read_text(errors="replace")
    assert summary["exit_code"] == 0, trainer_log[-3000:]
    assert summary["rollout"] == "vllm"
    assert "vLLMHttpServer" in trainer_log and "HFCPUServer" not in trainer_log  # verl's vLLM server, not hf_cpu

    # The proxy's per-sample branch on vLLM: n samples of a seeded request are n different samples, each
    # with one log-prob per token; versions are the replica's, never ahead of the trainer.
    assert probe_errors == [] and len(answers) == 2
    for answer in answers:
        samples = answer["token_ids"]
        assert len(samples) == SAMPLES and len({tuple(s) for s in samples}) == SAMPLES, samples
        for tokens, logprobs in zip(samples, answer["logprobs"]):
            assert len(logprobs) == len(tokens) >= 1
            assert all(math.isfinite(v) and v <= 0 for entry in logprobs for v in entry[0].values())
        assert 0 <= answer["policy_version"] <= STEPS
    assert answers[0]["policy_version"] <= answers[1]["policy_version"]

    # Weights pushed while vLLM decodes: the drain timed out, the run went on, completions spanned two
    # versions, and each is tagged with the oldest (its first tokens' weights); vLLM's log-probs stay sane.
    steps = summary["steps"]
    assert steps[-1]["drain_timeouts"] >= 1 and steps[-1]["straddled_completions"] >= 1, steps[-1]
    # verl's prefix-cache reset in update_weights fails while they decode (vLLM's warning); the proxy resets the
    # caches once they are done, before it lets new requests in, and that reset succeeds (no further warning).
    assert steps[-1]["cache_resets"] == steps[-1]["drain_timeouts"], steps[-1]
    assert 1 <= trainer_log.count("Failed to reset prefix cache") <= steps[-1]["drain_timeouts"]
    assert long_answers
    for before, answer, after in long_answers:
        for oldest, newest in answer["policy_version_span"]:
            assert before <= oldest <= newest <= after, (before, answer["policy_version_span"], after)
        assert answer["policy_version"] == min(oldest for oldest, _ in answer["policy_version_span"])
        assert all(len(tokens) == LONG_TOKENS for tokens in answer["token_ids"])
        assert all(math.isfinite(v) and v <= 0 for logprobs in answer["logprobs"] for entry in logprobs
                   for v in entry[0].values())

    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    assert all(row["from_atropos"] == 1.0 for row in steps)
    # The replica's version follows the trainer's weight syncs (what it reports to the proxy), and the
    # trained data stays within the demo's max_policy_lag of the trained policy.
    assert [row["policy_version"] for row in steps] == list(range(1, STEPS + 1))
    assert steps[-1]["policy_lag_mean"] <= 2
    # On-policy, the sampler and the trainer agree: at step 1 (lag 0) vLLM's log-probs of the trained tokens
    # (verl's processed_logprobs, at the row's temperature) equal the fp32 actor's recomputation. The 0.45 seen
    # on the math demo is the bf16 actor (verl's default mixed precision): docs/cpu_runs.md.
    assert steps[0]["policy_lag_mean"] == 0.0
    assert steps[0]["rollout_logprob_gap_max"] < 1e-3, steps[0]
    # After every sync vLLM serves the actor's weights: its log-probs of a greedy probe equal the actor's
    # recomputation, the probe is tagged with the version vLLM reports, and it moves with every update.
    assert all(row["sync_check_tokens"] >= 1 for row in steps)
    assert [row["sync_check_policy_version"] for row in steps] == list(range(1, STEPS + 1))
    assert all(row["sync_check_logprob_gap_max"] < 1e-3 for row in steps), steps
    first_token = [row["sync_check_first_token_logprob"] for row in steps]
    assert all(a != b for a, b in zip(first_token, first_token[1:])), first_token
    assert summary["leftover_pids"] == []
