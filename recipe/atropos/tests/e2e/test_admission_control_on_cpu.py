"""Admission control on a two-environment run where one environment is slow to score
(examples/fast_and_slow.py: the CPU demo's loop, real run-api, RayGRPOAtroposTrainer serving its
hf_cpu replica, two `learnable` BaseEnv processes at weights 0.7 / 0.3 generating up to Atropos's
default 3 batches ahead, max_policy_lag 1). Without admission control the environments' oldest
groups go stale in the queue and are dropped (docs/benchmarks.md); with it, the policy server holds
their requests instead: nothing is dropped as stale and every step trains the configured mix."""

import pytest

from recipe.atropos.examples.fast_and_slow import WEIGHTS, run_fast_and_slow

STEPS = 8
DELAY_S = 3.0


def test_admission_control_trains_the_mix_without_stale_drops(tmp_path):
    result = run_fast_and_slow(tmp_path, steps=STEPS, admission=True, delay_s=DELAY_S)
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, log
    steps = [s for s in result.steps if "training/global_step" in s]
    assert len(steps) == STEPS
    last = steps[-1]
    # The environments ran into the window: requests were held, not refused, and none waited past the bound.
    assert last["atropos/inference/admission/held_requests"] > 0
    assert last["atropos/inference/admission/released_max_hold"] == 0
    assert last["atropos/inference/rejected_requests"] == 0
    # Nothing was dropped as stale, and nothing trained was older than the bound.
    assert last["atropos/stale_groups_dropped_total"] == 0
    assert all(s["atropos/policy_lag_max"] <= 1 for s in steps)
    # The mix holds within 5 points, by environment.
    for name, weight in WEIGHTS.items():
        assert result.measured_shares[name] == pytest.approx(weight, abs=0.05), result.measured_shares
    assert result.leftover_pids == []
