"""`trainer_cls`: verl's own task runner builds the named trainer class (verl has no such key)."""

import pytest
import ray
from verl.trainer import main_ppo_v0
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from recipe.atropos.tests.helpers.trainer_probe import TrainerBuilt
from verl_patches.trainer_cls_patch import load_trainer_class

PROBE = "trainer_cls=recipe.atropos.tests.helpers.trainer_probe.ProbeTrainer"
EXPECTED_ARGUMENTS = ["collate_fn", "config", "processor", "ray_worker_group_cls", "resource_pool_manager",
                      "role_worker_mapping", "tokenizer", "train_dataset", "train_sampler", "val_dataset"]


def test_recipe_config_names_the_atropos_trainer(small_trainer_config):
    config = small_trainer_config()
    assert config.trainer_cls == "recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer"
    assert config.trainer.use_v1 is False and config.algorithm.adv_estimator == "grpo"


def test_task_runner_builds_trainer_cls_and_restores_verls_name(small_trainer_config):
    runner = main_ppo_v0.TaskRunner.__ray_actor_class__()
    with pytest.raises(TrainerBuilt) as info:
        runner.run(small_trainer_config(PROBE))
    assert str(EXPECTED_ARGUMENTS) in str(info.value)
    assert main_ppo_v0.RayPPOTrainer is RayPPOTrainer  # in-process, verl's run reads the module globals


def test_task_runner_actor_builds_trainer_cls_in_ray(small_trainer_config):
    """The real path of `python -m verl.trainer.main_ppo`: the runner is a Ray actor pickled by value."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runner = main_ppo_v0.TaskRunner.remote()
        with pytest.raises(ray.exceptions.RayTaskError) as info:
            ray.get(runner.run.remote(small_trainer_config(PROBE)), timeout=600)
        assert isinstance(info.value.as_instanceof_cause(), TrainerBuilt)
        assert "ProbeTrainer built by the task runner" in str(info.value)
    finally:
        ray.shutdown()


@pytest.mark.parametrize(
    ("fqn", "message"),
    [
        ("NoDots", "dotted path"),
        ("recipe.atropos.nope.Trainer", "cannot be imported"),
        ("recipe.atropos.examples.local_dataset.arithmetic_rows", "not a subclass of verl's RayPPOTrainer"),
    ],
)
def test_bad_trainer_cls_is_a_clear_error(fqn, message):
    with pytest.raises(ValueError, match=message):
        load_trainer_class(fqn)
