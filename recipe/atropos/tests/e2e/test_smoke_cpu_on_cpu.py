"""The CPU smoke: real run-api, a BaseEnv environment, steps of RayGRPOAtroposTrainer on the tiny
Qwen2 (real verl workers), through both entries: `python -m recipe.atropos.main_atropos` (the recipe
config as default) here, `python -m verl.trainer.main_ppo ... trainer_cls=...` in the fallback,
outage and resume tests. One trainer run carries several checks: each run costs a minute of start-up."""

from recipe.atropos.examples.smoke_cpu import read_steps, run
from recipe.atropos.reference.metric_catalog import documented


def test_atropos_steps_train_with_gradients_and_verls_validation_runs(tmp_path, capsys):
    """KL loss on, so the reference policy's log-probs are computed too. `trainer.val_before_train`
    and `trainer.test_freq` run verl's own validation on data.val_files (they were silently never
    run by this trainer's fit)."""
    code = run(tmp_path, steps=3, timeout=900, entry="main_atropos",
               extra=["actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.kl_loss_coef=0.01",
                      "trainer.val_before_train=true", "trainer.test_freq=2"])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    records = read_steps(tmp_path / "metrics.jsonl")
    by_step = {record["step"]: record["data"] for record in records}
    assert sorted(by_step) == [0, 1, 2, 3]
    steps = [by_step[step] for step in (1, 2, 3)]
    for metrics in steps:
        assert metrics["atropos/from_atropos"] == 1.0
        assert metrics["actor/grad_norm"] > 0
        assert metrics["atropos/total_sequences"] == 8  # data.train_batch_size 2 x rollout.n 4
        assert 0 < metrics["atropos/override_fraction"] < 1  # the environment sends token-level advantages on some groups
        assert metrics["atropos/invalid_groups"] == 0
        assert "timing_s/ref" in metrics
    # the reference equals the policy before the first update, and differs once it has moved
    assert steps[0]["actor/kl_loss"] == 0.0 and steps[-1]["actor/kl_loss"] > 0
    assert "smoke: PASS" in out
    # every atropos/* metric the run logged is in docs/metrics.md (recipe/atropos/reference/metric_catalog.py)
    logged = {key for step in steps for key in step if key.startswith("atropos/")}
    assert len(logged) > 30 and not [key for key in logged if documented(key) is None]

    assert "training/global_step" not in by_step[0]  # validation only
    assert any(key.startswith("val-core/") for key in by_step[0])  # before training
    assert not any(key.startswith("val-core/") for key in by_step[1])
    assert any(key.startswith("val-core/") for key in by_step[2])  # at test_freq
    assert any(key.startswith("val-core/") for key in by_step[3])  # at the last step
    # The environments' requests were held at the policy server during each validation (before training,
    # at step 2 and at the last step), so the total grows exactly at those steps.
    held = [by_step[step]["atropos/inference/validation_hold_s"] for step in (1, 2, 3)]
    assert 0 < held[0] < held[1] < held[2], held
