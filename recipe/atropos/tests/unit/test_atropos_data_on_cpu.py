"""scored_data_to_dataproto against a per-token Python reference on random groups."""

import numpy as np
import pytest
import torch

from recipe.atropos.data.to_dataproto import META_TRUNCATED_PROMPTS, META_TRUNCATED_RESPONSES, scored_data_to_dataproto
from recipe.atropos.data.scored_group import validate_group
from recipe.atropos.tests.helpers.scored_data_factory import make_group

PAD = 151643


def reference_rows(raw_groups, max_prompt, max_response):
    """Slow, obvious per-sequence construction of the expected tensors."""
    rows = []
    for g in raw_groups:
        for i, (seq, mask) in enumerate(zip(g["tokens"], g["masks"])):
            first = next(j for j, m in enumerate(mask) if m != -100)
            prompt, response = seq[:first], seq[first:]
            kept_prompt = prompt[-max_prompt:] if max_prompt else []
            kept_response = response[:max_response]
            row = {
                "prompts": [PAD] * (max_prompt - len(kept_prompt)) + kept_prompt,
                "responses": kept_response + [PAD] * (max_response - len(kept_response)),
                "attention": [0] * (max_prompt - len(kept_prompt)) + [1] * len(kept_prompt)
                + [1] * len(kept_response) + [0] * (max_response - len(kept_response)),
                "response_mask": [int(m != -100) for m in mask[first:][:max_response]] + [0] * (max_response - len(kept_response)),
                "score": [0.0] * max_response,
                "adv": [0.0] * max_response,
                "logprobs": [0.0] * max_response,
                "override": g["advantages"] is not None,
                "zero": bool(g["overrides"] and g["overrides"][i]["set_advantage_to_zero"]),
            }
            row["score"][len(kept_response) - 1] = g["scores"][i]
            if g["advantages"] is not None:
                adv = g["advantages"][i][first:][:max_response]
                row["adv"][: len(adv)] = adv
            if g["inference_logprobs"] is not None:
                lp = g["inference_logprobs"][i][first:][:max_response]
                row["logprobs"][: len(lp)] = lp
            pos, running = [], 0
            for a in row["attention"]:
                running += a
                pos.append(max(running - 1, 0))
            row["position_ids"] = pos
            rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(25))
def test_conversion_matches_reference(seed):
    rng = np.random.default_rng(seed)
    max_prompt = int(rng.integers(0, 10))
    max_response = int(rng.integers(1, 10))
    all_logprobs = bool(rng.integers(0, 2))
    raw = [
        make_group(
            rng,
            group_size=int(rng.integers(1, 5)),
            with_advantages=bool(rng.integers(0, 2)),
            with_logprobs=all_logprobs,
            zero_rows=(0,) if rng.random() < 0.3 else (),
            interior_prompt_labels=bool(rng.integers(0, 2)),
        )
        for _ in range(int(rng.integers(1, 6)))
    ]
    groups = [validate_group(g, i) for i, g in enumerate(raw)]
    data = scored_data_to_dataproto(groups, pad_token_id=PAD, max_prompt_length=max_prompt, max_response_length=max_response)
    expected = reference_rows(raw, max_prompt, max_response)
    b = data.batch
    n = len(expected)
    assert b["input_ids"].shape == (n, max_prompt + max_response)
    assert b["prompts"].tolist() == [r["prompts"] for r in expected]
    assert b["responses"].tolist() == [r["responses"] for r in expected]
    assert b["input_ids"].tolist() == [r["prompts"] + r["responses"] for r in expected]
    assert b["attention_mask"].tolist() == [r["attention"] for r in expected]
    assert b["position_ids"].tolist() == [r["position_ids"] for r in expected]
    assert b["response_mask"].tolist() == [r["response_mask"] for r in expected]
    torch.testing.assert_close(b["token_level_scores"], torch.tensor([r["score"] for r in expected]))
    torch.testing.assert_close(b["token_level_advantages"], torch.tensor([r["adv"] for r in expected]))
    assert b["advantage_override_mask"].tolist() == [r["override"] for r in expected]
    assert b["advantage_zero_mask"].tolist() == [r["zero"] for r in expected]
    if all_logprobs:
        torch.testing.assert_close(b["rollout_log_probs"], torch.tensor([r["logprobs"] for r in expected]))
    else:
        assert "rollout_log_probs" not in b.keys()
    # one uid per group, shared by its rows
    uids = data.non_tensor_batch["uid"]
    sizes = [len(g["tokens"]) for g in raw]
    assert len(set(uids)) == len(raw)
    assert [len(set(uids[s:e])) for s, e in zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes))] == [1] * len(raw)
    # truncation is counted
    firsts = [next(j for j, m in enumerate(mask) if m != -100) for g in raw for mask in g["masks"]]
    lengths = [len(s) for g in raw for s in g["tokens"]]
    assert data.meta_info[META_TRUNCATED_PROMPTS] == sum(f > max_prompt for f in firsts)
    assert data.meta_info[META_TRUNCATED_RESPONSES] == sum(L - f > max_response for L, f in zip(lengths, firsts))


def test_rollout_log_probs_kept_per_row_when_only_some_groups_carry_them():
    """A group without inference_logprobs must not switch the rollout correction off for the others:
    rows with logprobs keep them, rows without take the recomputed old log-probs (importance weight 1),
    and verl's own correction then weights exactly the rows that have the sampler's logprobs."""
    from verl.trainer.config.algorithm import RolloutCorrectionConfig
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

    from recipe.atropos.data.to_dataproto import fill_missing_rollout_log_probs

    rng = np.random.default_rng(0)
    raw = [make_group(rng, group_size=2, with_logprobs=True), make_group(rng, group_size=2)]
    data = scored_data_to_dataproto(
        [validate_group(g, i) for i, g in enumerate(raw)], pad_token_id=0, max_prompt_length=16, max_response_length=16
    )
    assert data.batch["rollout_log_probs_present"].tolist() == [True, True, False, False]
    assert data.meta_info["atropos_rows_without_inference_logprobs"] == 2
    expected = reference_rows(raw[:1], 16, 16)
    mask = data.batch["response_mask"].bool()
    torch.testing.assert_close(data.batch["rollout_log_probs"][:2], torch.tensor([r["logprobs"] for r in expected]))

    old = torch.where(mask, torch.full(mask.shape, -0.5), torch.zeros(mask.shape))
    data.batch["old_log_probs"] = old
    fill_missing_rollout_log_probs(data)
    torch.testing.assert_close(data.batch["rollout_log_probs"][2:], old[2:])
    data, _ = compute_rollout_correction_and_add_to_batch(
        data, RolloutCorrectionConfig(rollout_is="token", rollout_is_threshold=1e6))
    weights = data.batch["rollout_is_weights"]
    assert torch.all(weights[2:][mask[2:]] == 1.0)  # no sampler logprobs: not corrected
    sampled = data.batch["rollout_log_probs"][:2][mask[:2]]
    torch.testing.assert_close(weights[:2][mask[:2]], torch.exp(old[:2][mask[:2]] - sampled))


def test_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="at least one group"):
        scored_data_to_dataproto([], pad_token_id=0, max_prompt_length=4, max_response_length=4)
