"""`trainer.atropos.env_ref_logprobs_only`: the environments' ref_logprobs are the only reference.
A misconfiguration that would leave it without effect stops naming the key; groups without them are
dropped naming the field, from the bytes of `/batch` and from the journal alike; verl's fused
actor+reference role becomes the plain actor role on the same pool. (The e2e test in
test_environment_fields_on_cpu.py trains with it through the real run-api and counts the models
the worker loads.)"""

import copy

import numpy as np
import orjson
import pytest
from omegaconf import OmegaConf
from verl.single_controller.ray.base import ResourcePoolManager
from verl.trainer.ppo.utils import Role

from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.env_reference import build_without_reference_model, check_env_reference_only
from recipe.atropos.tests.helpers.scored_data_factory import make_group

ONLY = {"use_env_ref_logprobs": True, "env_ref_logprobs_only": True, "fallback_to_grpo": False}


def verl_config(use_kl_loss: bool = True, use_kl_in_reward: bool = False):
    return OmegaConf.create({"algorithm": {"use_kl_in_reward": use_kl_in_reward},
                             "actor_rollout_ref": {"actor": {"use_kl_loss": use_kl_loss}}})


@pytest.mark.parametrize(("settings", "config", "names"), [
    ({**ONLY, "use_env_ref_logprobs": False}, verl_config(), "trainer.atropos.use_env_ref_logprobs"),
    (ONLY, verl_config(use_kl_loss=False), "actor_rollout_ref.actor.use_kl_loss"),
    ({**ONLY, "fallback_to_grpo": True}, verl_config(), "trainer.atropos.fallback_to_grpo"),
])
def test_a_setting_that_would_change_nothing_stops_naming_the_key(settings, config, names):
    with pytest.raises(ValueError, match=names.replace(".", r"\.")):
        check_env_reference_only(AtroposClientConfig.from_mapping(settings), config)


def test_a_consistent_setting_passes():
    check_env_reference_only(AtroposClientConfig.from_mapping(ONLY), verl_config())
    check_env_reference_only(AtroposClientConfig.from_mapping(ONLY), verl_config(False, use_kl_in_reward=True))


def test_groups_without_ref_logprobs_are_dropped_naming_the_field():
    rng = np.random.default_rng(0)
    groups = [make_group(rng, group_size=2, env_id=i) for i in range(3)]
    for raw in groups[:2]:
        raw["ref_logprobs"] = [[-0.5] * len(tokens) for tokens in raw["tokens"]]
    for settings, kept in ((ONLY, [0, 1]), ({}, [0, 1, 2])):
        client = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1", **settings}, vocab_size=1000)
        for batch in (client.batch_from_payload(orjson.dumps({"batch": groups})),
                      client.validate_batch(copy.deepcopy(groups))):
            assert [group.env_id for group in batch.groups] == kept
            assert [(bad.env_id, bad.field) for bad in batch.invalid] == ([(2, "ref_logprobs")] if settings else [])
        assert client.stats.invalid_reasons["ref_logprobs"] == (2 if settings else 0)


def test_the_worker_is_built_without_its_reference_model_on_the_same_pool():
    worker = object()
    roles = {Role.ActorRolloutRef: worker}
    pools = ResourcePoolManager(resource_pool_spec={"global_pool": [1]}, mapping={Role.ActorRolloutRef: "global_pool"})
    assert build_without_reference_model(roles, pools)
    assert roles == {Role.ActorRollout: worker} and pools.mapping == {Role.ActorRollout: "global_pool"}
    assert not build_without_reference_model(roles, pools)  # already plain (LoRA: the reference is the actor)
