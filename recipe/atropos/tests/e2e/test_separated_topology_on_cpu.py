"""The separated topology, end to end through the launcher (the CPU demo with `+topology=separated`):
real `run-api`, `SeparatedAtroposTrainer` on verl's separated layout (the actor as separation's
DetachActorWorker on the trainer pool, the hf_cpu replica standalone on a rollout pool of its own),
the `learnable` BaseEnv generating through the policy server in front of that replica, and the weights
pushed after every step by verl_patches' `ray` checkpoint engine. On CPU both pools are fake "GPU"
slots (ray_init.num_gpus=2)."""

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, make_demo_inputs
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.launcher.services import run_services
from recipe.atropos.tests.helpers.launcher_helpers import SYNC_CHECK_FP32

STEPS = 3
SEPARATED_ON_CPU = ["+topology=separated", "actor_rollout_ref.rollout.checkpoint_engine.backend=ray",
                    "ray_kwargs.ray_init.num_gpus=2"]


def test_the_loop_trains_with_its_rollout_replica_on_a_pool_of_its_own(tmp_path):
    model, data = make_demo_inputs(tmp_path)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={tmp_path / 'run'}"])
    result = run_services(config, [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        f"trainer.total_training_steps={STEPS}", "trainer.atropos.fallback_to_grpo=false",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", *SEPARATED_ON_CPU, *SYNC_CHECK_FP32,
    ])
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")
    assert result.exit_code == 0, log[-3000:]
    assert "separated topology: the actor trains on pool global_pool, the policy server's replicas run on ['rollout_pool_0']" in log
    steps = result.steps
    assert len(steps) == STEPS
    assert all(s["atropos/from_atropos"] == 1.0 for s in steps)
    assert all(s["atropos/policy_version_unknown_groups"] == 0 for s in steps)

    # Every step's update travelled to the replica through the checkpoint engine (the colocated
    # `naive` sync reports nothing), and the replica serves exactly what the actor trained.
    assert all(s["checkpoint_engine/tensors"] > 0 and s["checkpoint_engine/payload_mbytes"] > 0 for s in steps)
    assert [s["atropos/sync_check/policy_version"] for s in steps] == list(range(1, STEPS + 1))
    assert all(s["atropos/sync_check/logprob_gap_max"] < 1e-3 for s in steps), [
        s["atropos/sync_check/logprob_gap_max"] for s in steps]
    first_token = [s["atropos/sync_check/first_token_logprob"] for s in steps]
    assert all(a != b for a, b in zip(first_token, first_token[1:])), first_token

    # The environment kept getting completions while the actor trained.
    assert sum(s["atropos/inference/completions_while_training"] for s in steps) > 0
    assert result.leftover_pids == []

