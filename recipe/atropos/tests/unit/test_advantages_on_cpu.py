"""The Atropos GRPO rule against a slow reference, and stock-GRPO equivalence through verl."""

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.trainer.ppo import core_algos, ray_trainer
from verl.trainer.ppo.core_algos import AdvantageEstimator

import verl_patches
from recipe.atropos.atropos_core_algos import META_USE_ADVANTAGES, AtroposGRPOComputer
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.data.scored_group import validate_group
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def reference_advantages(data, epsilon, norm_by_std, use_advantages):
    """Per-row loops over Python floats: the rule as the issue states it."""
    b = data.batch
    scores = b["token_level_scores"].sum(-1).double().tolist()
    uids = list(data.non_tensor_batch["uid"])
    out = torch.zeros_like(b["token_level_scores"])
    for i in range(len(scores)):
        members = [scores[j] for j in range(len(scores)) if uids[j] == uids[i]]
        if len(members) == 1:
            mean, std = 0.0, 1.0
        else:
            mean = sum(members) / len(members)
            std = (sum((s - mean) ** 2 for s in members) / (len(members) - 1)) ** 0.5
        adv = (scores[i] - mean) / (std + epsilon) if norm_by_std else scores[i] - mean
        mask = b["response_mask"][i].float()
        if bool(b["advantage_zero_mask"][i]):
            row = torch.zeros_like(mask)
        elif use_advantages and bool(b["advantage_override_mask"][i]):
            row = b["token_level_advantages"][i] * mask
        else:
            row = adv * mask
        out[i] = row
    return out


def random_batch(seed, **overrides):
    rng = np.random.default_rng(seed)
    raw = [
        make_group(
            rng,
            group_size=int(rng.choice([1, 2, 3, 4, 8])),
            with_advantages=bool(rng.integers(0, 2)),
            zero_rows=tuple(int(i) for i in rng.choice(3, size=int(rng.integers(0, 2)), replace=False)),
            interior_prompt_labels=bool(rng.integers(0, 2)),
            **overrides,
        )
        for _ in range(int(rng.integers(1, 7)))
    ]
    for g in raw:  # zero_rows may point past a small group
        if g["overrides"] is not None:
            g["overrides"] = g["overrides"][: len(g["tokens"])] + [{}] * (len(g["tokens"]) - len(g["overrides"]))
    groups = [validate_group(g, i) for i, g in enumerate(raw)]
    return scored_data_to_dataproto(groups, pad_token_id=0, max_prompt_length=8, max_response_length=10)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("use_advantages", [True, False])
def test_rule_matches_reference(seed, norm_by_std, use_advantages):
    data = random_batch(seed)
    expected = reference_advantages(data, 1e-6, norm_by_std, use_advantages)
    AtroposGRPOComputer(norm_adv_by_std_in_grpo=norm_by_std, use_advantages=use_advantages).compute(data)
    torch.testing.assert_close(data.batch["advantages"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(data.batch["returns"], expected, rtol=1e-5, atol=1e-5)


def test_zeroed_row_still_counts_in_group_statistics():
    """set_advantage_to_zero zeroes the row's advantage; it is not reward 0 (which would move the mean)."""
    rng = np.random.default_rng(1)
    raw = make_group(rng, group_size=3, zero_rows=(2,))
    raw["scores"] = [1.0, 0.0, 1.0]
    data = scored_data_to_dataproto([validate_group(raw, 0)], pad_token_id=0, max_prompt_length=16, max_response_length=16)
    AtroposGRPOComputer().compute(data)
    adv = data.batch["advantages"]
    mask = data.batch["response_mask"].bool()
    mean, std = 2 / 3, float(np.std([1.0, 0.0, 1.0], ddof=1))
    assert torch.allclose(adv[0][mask[0]], torch.tensor((1 - mean) / (std + 1e-6)))
    assert torch.allclose(adv[1][mask[1]], torch.tensor((0 - mean) / (std + 1e-6)))
    assert torch.count_nonzero(adv[2]) == 0


def test_a_mixed_groups_advantages_are_those_of_its_rows_not_marked_sft_alone():
    """SFT rows leave their group's statistics and get advantage 0; a group of only SFT rows has none."""
    rng = np.random.default_rng(3)
    mixed = make_group(rng, group_size=5)
    mixed["scores"] = [1.0, 7.0, 0.0, -3.0, 0.5]
    mixed["overrides"] = [{}, {"sft": True}, {}, {"sft": True}, {}]
    alone = {key: [value[i] for i in (0, 2, 4)] for key, value in mixed.items() if isinstance(value, list)}
    all_sft = make_group(rng, group_size=2)
    all_sft["group_overrides"] = {"sft": True}

    def advantages(*groups):
        data = scored_data_to_dataproto([validate_group(g, i) for i, g in enumerate(groups)], pad_token_id=0,
                                        max_prompt_length=16, max_response_length=16)
        return AtroposGRPOComputer().compute(data).batch["advantages"]

    with_sft = advantages(mixed, all_sft)
    torch.testing.assert_close(with_sft[[0, 2, 4]], advantages(alone))
    assert torch.count_nonzero(with_sft[[1, 3, 5, 6]]) == 0


def test_override_rows_keep_environment_values_and_plain_rows_get_grpo():
    rng = np.random.default_rng(2)
    with_adv = make_group(rng, group_size=2, with_advantages=True)
    plain = make_group(rng, group_size=2)
    plain["scores"] = [1.0, 0.0]
    data = scored_data_to_dataproto(
        [validate_group(with_adv, 0), validate_group(plain, 1)], pad_token_id=0, max_prompt_length=16, max_response_length=16
    )
    AtroposGRPOComputer().compute(data)
    b = data.batch
    torch.testing.assert_close(b["advantages"][:2], b["token_level_advantages"][:2] * b["response_mask"][:2])
    expected_plain = 0.5 / (np.std([1.0, 0.0], ddof=1) + 1e-6)
    assert torch.allclose(b["advantages"][2][b["response_mask"][2].bool()], torch.tensor(expected_plain, dtype=torch.float32))
    assert torch.allclose(b["advantages"][3][b["response_mask"][3].bool()], torch.tensor(-expected_plain, dtype=torch.float32))


def _stock_batch(seed):
    rng = np.random.default_rng(seed)
    n, length = 12, 9
    mask = torch.ones(n, length, dtype=torch.int64)
    for i in range(n):
        mask[i, int(rng.integers(1, length)) :] = 0
    rewards = torch.zeros(n, length)
    rewards[torch.arange(n), mask.sum(-1) - 1] = torch.tensor(rng.choice([0.0, 1.0, 0.3], size=n), dtype=torch.float32)
    uid = np.array([f"u{int(k)}" for k in rng.integers(0, 4, size=n)], dtype=object)
    responses = torch.zeros(n, length, dtype=torch.int64)
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask, "responses": responses},
        non_tensors={"uid": uid},
    )


@pytest.mark.parametrize("seed", range(5))
def test_patched_compute_advantage_is_stock_grpo_without_atropos_fields(seed):
    """Byte-identical to verl's own GRPO on a batch that carries no override fields."""
    assert verl_patches.patches_applied()["grpo_advantage_overrides"]
    data = _stock_batch(seed)
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"].clone(),
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
    )
    out = ray_trainer.compute_advantage(data, adv_estimator=AdvantageEstimator.GRPO, norm_adv_by_std_in_grpo=True)
    assert torch.equal(out.batch["advantages"], expected)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_patched_compute_advantage_equals_stock_grpo_when_no_row_overrides(seed, norm_by_std):
    """An Atropos batch with no overrides gets verl's stock GRPO values."""
    data = random_batch(seed)
    data.batch["advantage_override_mask"][:] = False
    data.batch["advantage_zero_mask"][:] = False
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"].clone(),
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    out = ray_trainer.compute_advantage(data, adv_estimator="grpo", norm_adv_by_std_in_grpo=norm_by_std)
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-6)


def test_patched_compute_advantage_applies_overrides_and_meta_switch():
    data = random_batch(3, prompt_len=(1, 3))
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    data.batch["advantage_override_mask"][:] = True
    data.batch["advantage_zero_mask"][:] = False
    out = ray_trainer.compute_advantage(data, adv_estimator=AdvantageEstimator.GRPO)
    torch.testing.assert_close(out.batch["advantages"], data.batch["token_level_advantages"] * data.batch["response_mask"])

    data.meta_info[META_USE_ADVANTAGES] = False
    out = ray_trainer.compute_advantage(data, adv_estimator=AdvantageEstimator.GRPO)
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"].clone(),
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
    )
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-6)


def bare_trainer(adv_estimator="grpo", n=4):
    """The trainer's advantage step alone (no Ray, no workers): only the config it reads."""
    from omegaconf import OmegaConf

    from recipe.atropos.atropos_ray_trainer import RayGRPOAtroposTrainer

    trainer = object.__new__(RayGRPOAtroposTrainer)
    trainer.config = OmegaConf.create({
        "algorithm": {"adv_estimator": adv_estimator, "gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": True},
        "actor_rollout_ref": {"rollout": {"n": n}},
    })
    return trainer


def test_trainer_applies_the_atropos_rule_even_where_verl_patches_did_not_load(monkeypatch):
    """verl swallows plugin ImportErrors: in such a process `compute_advantage` is verl's own. The
    trainer's advantage step must still apply the environments' overrides and zero masks."""
    monkeypatch.setattr(ray_trainer, "compute_advantage", ray_trainer.compute_advantage.__wrapped_original__)
    data = random_batch(7, prompt_len=(1, 3))
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    assert data.batch["advantage_override_mask"].any() and data.batch["advantage_zero_mask"].any()
    expected = reference_advantages(data, 1e-6, True, True)
    out = bare_trainer()._compute_advantage(data)
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-6)
    zeroed = out.batch["advantages"][data.batch["advantage_zero_mask"].bool()]
    assert torch.all(zeroed == 0)


def test_fallback_batches_get_verls_grpo():
    data = _stock_batch(2)
    expected, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=data.batch["token_level_rewards"].clone(),
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
    )
    assert torch.equal(bare_trainer()._compute_advantage(data).batch["advantages"], expected)


@pytest.mark.parametrize("estimator", ["rloo", "gae", "reinforce_plus_plus"])
def test_an_estimator_the_rule_does_not_implement_stops_the_trainer_naming_the_key(small_trainer_config, estimator):
    from recipe.atropos.atropos_ray_trainer import RayGRPOAtroposTrainer

    config = small_trainer_config(f"algorithm.adv_estimator={estimator}")
    with pytest.raises(ValueError, match=rf"algorithm\.adv_estimator='{estimator}' is not supported"):
        RayGRPOAtroposTrainer(config=config, tokenizer=None, role_worker_mapping={}, resource_pool_manager=None)
