"""The CPU smoke: real run-api, a BaseEnv environment, 3 steps of RayGRPOAtroposTrainer through
`python -m verl.trainer.main_ppo ... trainer_cls=...` on the tiny Qwen2 (real verl workers)."""

from recipe.atropos.examples.smoke_cpu import read_steps, run


def test_three_atropos_steps_train_with_gradients(tmp_path, capsys):
    """KL loss on, so the reference policy's log-probs are computed too."""
    code = run(tmp_path, steps=3, timeout=900,
               extra=["actor_rollout_ref.actor.use_kl_loss=true", "actor_rollout_ref.actor.kl_loss_coef=0.01"])
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    steps = read_steps(tmp_path / "metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2, 3]
    for record in steps:
        metrics = record["data"]
        assert metrics["atropos/from_atropos"] == 1.0
        assert metrics["actor/grad_norm"] > 0
        assert metrics["atropos/total_sequences"] == 8  # data.train_batch_size 2 x rollout.n 4
        assert 0 < metrics["atropos/override_fraction"] < 1  # the environment sends token-level advantages on some groups
        assert metrics["atropos/invalid_groups"] == 0
        assert "timing_s/ref" in metrics
    # the reference equals the policy before the first update, and differs once it has moved
    assert steps[0]["data"]["actor/kl_loss"] == 0.0 and steps[-1]["data"]["actor/kl_loss"] > 0
    assert "smoke: PASS" in out


def test_hydra_entry_trains_a_step(tmp_path, capsys):
    """`python -m recipe.atropos.main_atropos` runs the same trainer with the recipe config as default."""
    code = run(tmp_path, steps=1, timeout=900, extra=[], entry="main_atropos")
    assert code == 0, capsys.readouterr().out[-4000:]
    (record,) = read_steps(tmp_path / "metrics.jsonl")
    assert record["data"]["atropos/from_atropos"] == 1.0 and record["data"]["actor/grad_norm"] > 0


def test_verls_validation_runs_before_training_and_at_test_freq(tmp_path, capsys):
    """`trainer.val_before_train` and `trainer.test_freq` run verl's own validation on data.val_files
    (they were silently never run by this trainer's fit)."""
    code = run(tmp_path, steps=2, timeout=900, extra=["trainer.val_before_train=true", "trainer.test_freq=2"])
    assert code == 0, capsys.readouterr().out[-4000:]
    records = read_steps(tmp_path / "metrics.jsonl")
    by_step = {record["step"]: record["data"] for record in records}
    assert sorted(by_step) == [0, 1, 2]
    assert any(key.startswith("val-core/") for key in by_step[0])  # before training
    assert any(key.startswith("val-core/") for key in by_step[2])  # at test_freq (the last step)
    assert not any(key.startswith("val-core/") for key in by_step[1])
