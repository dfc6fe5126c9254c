"""The hf_cpu rollout server: token-in/token-out generation, log-probs, weight loading."""

import asyncio
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from verl_patches.hf_cpu_rollout import HFCPUServer, sample_next_tokens


def make_server(model_dir, response_length=8):
    config = SimpleNamespace(prompt_length=32, response_length=response_length, max_model_len=None, seed=0)
    return HFCPUServer(config, SimpleNamespace(local_path=str(model_dir), path=str(model_dir)), replica_rank=0)


def generate(server, prompt, **params):
    return asyncio.run(server.generate("r", prompt_ids=prompt, sampling_params=params))


def test_greedy_generation_matches_the_model_and_reports_its_logprobs(tiny_model_dir):
    server = make_server(tiny_model_dir)
    prompt = [9707, 1879, 11, 1052]
    out = generate(server, prompt, temperature=0.0, logprobs=True)
    assert 1 <= len(out.token_ids) <= 8 and len(out.log_probs) == len(out.token_ids)
    assert out.extra_fields["global_steps"] == 0

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids])).logits[0]
    positions = range(len(prompt) - 1, len(prompt) - 1 + len(out.token_ids))
    expected_tokens = [int(torch.argmax(logits[p])) for p in positions]
    expected_logprobs = [float(torch.log_softmax(logits[p], -1)[t]) for p, t in zip(positions, out.token_ids)]
    assert out.token_ids == expected_tokens
    assert out.log_probs == pytest.approx(expected_logprobs, abs=1e-4)


def test_sampled_logprobs_are_those_of_the_tempered_distribution(tiny_model_dir):
    """At T=0.7 each reported log-prob is log_softmax(logits / 0.7) of a full forward pass: what
    verl's actor recomputes for a row at that temperature."""
    server = make_server(tiny_model_dir)
    prompt = [9707, 1879, 11, 1052]
    out = generate(server, prompt, temperature=0.7, logprobs=True, max_tokens=8)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + out.token_ids])).logits[0]
    positions = range(len(prompt) - 1, len(prompt) - 1 + len(out.token_ids))
    tempered = [float(torch.log_softmax(logits[p] / 0.7, -1)[t]) for p, t in zip(positions, out.token_ids)]
    untempered = [float(torch.log_softmax(logits[p], -1)[t]) for p, t in zip(positions, out.token_ids)]
    assert out.log_probs == pytest.approx(tempered, abs=1e-4)
    assert max(abs(a - b) for a, b in zip(out.log_probs, untempered)) > 1e-3


def test_max_tokens_and_context_budget_are_respected(tiny_model_dir):
    server = make_server(tiny_model_dir)
    assert len(generate(server, [1, 2, 3], temperature=1.0, max_tokens=3).token_ids) <= 3
    with pytest.raises(ValueError, match="no room"):
        generate(server, list(range(100, 140)), temperature=1.0)


def test_loaded_weights_change_what_is_served_and_unknown_names_are_refused(tiny_model_dir):
    server = make_server(tiny_model_dir)
    before = server.parameter_checksum()
    state = {name: torch.zeros_like(p) for name, p in server.model.named_parameters() if name.endswith("norm.weight")}
    assert server.load_weights(state) == len(state) > 0
    assert server.parameter_checksum() != before
    assert server.stats()["weight_updates"] == 1
    server.set_global_steps(7)
    assert generate(server, [1, 2], temperature=0.0).extra_fields["global_steps"] == 7
    with pytest.raises(KeyError, match="unknown parameters"):
        server.load_weights({"not.a.parameter": torch.zeros(1)})


def test_batched_completions_match_single_ones_and_stop_per_row(tiny_model_dir):
    server = make_server(tiny_model_dir)
    prompt = [9707, 1879, 11]
    single = generate(server, prompt, temperature=0.0, logprobs=True)
    batch = asyncio.run(server.generate_batch(prompt_ids=prompt, sampling_params={"temperature": 0.0, "logprobs": True}, n=3))
    assert [out.token_ids for out in batch] == [single.token_ids] * 3
    for out in batch:
        assert out.log_probs == pytest.approx(single.log_probs, abs=1e-4)

    server.eos_token_ids = {int(t) for t in range(100, 150_000)}  # nearly every token ends a completion
    sampled = asyncio.run(server.generate_batch(prompt_ids=prompt, sampling_params={"temperature": 1.0, "max_tokens": 6}, n=16))
    assert all(out.stop_reason == "completed" and len(out.token_ids) == 1 for out in sampled if out.token_ids[0] >= 100)
    assert len({tuple(out.token_ids) for out in sampled}) > 1  # rows are sampled independently


def test_sampling_filters():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.9], [3.0, 0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    assert sample_next_tokens(logits, 0.0, 1.0, -1, gen).tolist() == [1, 0]
    assert {tuple(sample_next_tokens(logits, 1.0, 1.0, 1, gen).tolist()) for _ in range(20)} == {(1, 0)}
    assert {int(sample_next_tokens(logits, 1.0, 1.0, 2, gen)[0]) for _ in range(50)} <= {1, 3}
    assert {int(sample_next_tokens(logits, 1.0, 0.5, -1, gen)[0]) for _ in range(50)} == {1}
    # min_p 0.5: tokens at least half as likely as the most likely one (5.0 and 4.9, not 1.0 or 0.0)
    assert {int(sample_next_tokens(logits, 1.0, 1.0, -1, gen, min_p=0.5)[0]) for _ in range(50)} == {1, 3}
    assert {int(sample_next_tokens(logits, 1.0, 1.0, -1, gen)[0]) for _ in range(400)} > {1, 3}  # without it


def test_stop_token_ids_ignore_eos_min_tokens_and_seed_are_applied(tiny_model_dir):
    server = make_server(tiny_model_dir, response_length=12)
    prompt = [9707, 1879, 11]
    server.eos_token_ids = set()
    greedy = generate(server, prompt, temperature=0.0, max_tokens=12).token_ids
    stop_at = greedy.index(greedy[4]) + 1  # where greedy[4] first appears
    stopped = generate(server, prompt, temperature=0.0, max_tokens=12, stop_token_ids=[greedy[4]])
    assert stopped.token_ids == greedy[:stop_at] and stopped.stop_reason == "completed"

    server.eos_token_ids = {int(t) for t in range(100, 150_000)}  # nearly every token ends a completion
    rows = asyncio.run(server.generate_batch(prompt_ids=prompt, sampling_params={"temperature": 1.0, "max_tokens": 6,
                                                                                 "min_tokens": 4}, n=8))
    assert all(len(out.token_ids) >= 5 for out in rows)  # no stop token among the first 4
    assert not {t for out in rows for t in out.token_ids[:4]} & server.eos_token_ids
    rows = asyncio.run(server.generate_batch(prompt_ids=prompt, sampling_params={"temperature": 1.0, "max_tokens": 6,
                                                                                 "ignore_eos": True}, n=4))
    assert all(len(out.token_ids) == 6 and out.stop_reason == "length" for out in rows)

    server.eos_token_ids = set()
    seeded = [generate(server, prompt, temperature=1.0, max_tokens=8, seed=seed).token_ids for seed in (7, 7, 8)]
    assert seeded[0] == seeded[1] != seeded[2]


def test_a_weight_load_waits_for_the_completion_being_decoded_and_sets_the_version_with_the_weights(tiny_model_dir):
    """What lets the trainer sync hf_cpu without draining first: no completion mixes two weight versions
    or carries a version its weights are not."""
    import threading
    import time

    server = make_server(tiny_model_dir, response_length=64)
    server.eos_token_ids = set()  # decode the whole budget
    old_weights = generate(server, [1, 2, 3], temperature=0.0, max_tokens=64).token_ids
    finished = {}

    def long_completion():
        out = generate(server, [1, 2, 3], temperature=0.0, max_tokens=64)
        finished["tokens"], finished["version"] = out.token_ids, out.extra_fields["global_steps"]

    thread = threading.Thread(target=long_completion)
    thread.start()
    while not server._lock.locked():
        time.sleep(0.001)
    state = {name: torch.zeros_like(p) for name, p in server.model.named_parameters() if name.endswith("norm.weight")}
    server.load_weights(state, global_steps=3)
    thread.join(60)
    assert finished["tokens"] == old_weights and finished["version"] == 0  # all 64 tokens from the old weights
    after = generate(server, [1, 2, 3], temperature=0.0, max_tokens=64)
    assert after.extra_fields["global_steps"] == 3 and after.token_ids != old_weights
