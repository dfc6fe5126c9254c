"""The weight-sync check's pieces: the probe it recomputes, its metrics, and the stop it makes past
`sync_check_max_gap`. The served completion and the actor's recomputation are given here; the check
against verl's actor and a real replica runs in the online-loop tests (hf_cpu, and vLLM's CPU build)."""

import numpy as np
import pytest
import torch
from verl import DataProto

from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.policy_server.proxy import Completion
from recipe.atropos.policy_server.settings import InferenceConfig
from recipe.atropos.policy_server.sync_check import WeightSyncCheck, WeightSyncCheckError, first_prompt, probe_group


def left_padded_batch() -> DataProto:
    prompts = torch.tensor([[0, 0, 5, 6, 7], [0, 8, 9, 10, 11]])
    responses = torch.tensor([[1, 2, 0], [3, 4, 0]])
    attention = torch.cat([prompts != 0, torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)], dim=1).long()
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": responses, "attention_mask": attention})


def test_the_probe_prompt_is_the_first_rows_prompt_without_padding():
    assert first_prompt(left_padded_batch()) == [5, 6, 7]


def test_the_probe_group_puts_the_completion_in_the_response_of_every_row():
    group = probe_group([5, 6, 7], [21, 22], rows=4)
    data = scored_data_to_dataproto([group], pad_token_id=0, max_prompt_length=4, max_response_length=3)
    assert data.batch["responses"].tolist() == [[21, 22, 0]] * 4
    assert data.batch["prompts"].tolist() == [[0, 5, 6, 7]] * 4
    assert data.batch["response_mask"].tolist() == [[1, 1, 0]] * 4
    assert data.batch["temperature"].tolist() == [1.0] * 4  # greedy tokens are scored on the raw logits


def run_check(served_logprobs, recomputed, max_gap=None, version=3):
    seen = {}

    def generate(prompt_ids, params):
        seen["generate"] = (prompt_ids, params)
        return Completion(token_ids=[21, 22, 23][: len(served_logprobs)], logprobs=served_logprobs,
                          finish_reason="length", policy_version=version,
                          newest_policy_version=version)

    def recompute(prompt_ids, completion_ids):
        seen["recompute"] = (prompt_ids, completion_ids)
        return np.asarray(recomputed)

    metrics = WeightSyncCheck(max_tokens=3, max_gap=max_gap).run(left_padded_batch(), generate, recompute)
    return metrics, seen


def test_metrics_compare_the_served_and_recomputed_logprobs_of_a_greedy_probe():
    metrics, seen = run_check([-1.0, -2.0, -0.5], [-1.0, -2.25, -0.5])
    assert seen["generate"] == ([5, 6, 7], {"temperature": 0.0, "max_tokens": 3})
    assert seen["recompute"] == ([5, 6, 7], [21, 22, 23])
    assert metrics == {
        "atropos/sync_check/logprob_gap_max": 0.25,
        "atropos/sync_check/logprob_gap_mean": pytest.approx(0.25 / 3),
        "atropos/sync_check/first_token_logprob": -1.0,
        "atropos/sync_check/policy_version": 3.0,
        "atropos/sync_check/tokens": 3.0,
    }


def test_a_gap_past_the_limit_stops_the_run_naming_the_setting():
    with pytest.raises(WeightSyncCheckError, match=r"policy version 3 .* up to 0.25 .*sync_check_max_gap=0.001"):
        run_check([-1.0, -2.0, -0.5], [-1.0, -2.25, -0.5], max_gap=1e-3)
    metrics, _ = run_check([-1.0, -2.0], [-1.0, -2.0005], max_gap=1e-3)  # within the limit: metrics only
    assert metrics["atropos/sync_check/logprob_gap_max"] == pytest.approx(5e-4)


def test_settings_that_cannot_take_effect_stop_at_startup():
    assert InferenceConfig.from_mapping({}).sync_check_tokens == 0  # off unless asked for
    with pytest.raises(ValueError, match=r"sync_check_tokens must be >= 0"):
        InferenceConfig.from_mapping({"sync_check_tokens": -1})
    with pytest.raises(ValueError, match=r"sync_check_tokens .* needs trainer.atropos_inference.enable=true"):
        InferenceConfig.from_mapping({"sync_check_tokens": 8, "enable": False})
    with pytest.raises(ValueError, match=r"sync_check_max_gap is set but the check is off"):
        InferenceConfig.from_mapping({"sync_check_max_gap": 1e-3})
    with pytest.raises(ValueError, match=r"sync_check_max_gap must be > 0"):
        InferenceConfig.from_mapping({"sync_check_tokens": 8, "sync_check_max_gap": 0})
