"""Log-probs recomputed at each row's sampling temperature, end to end through the launcher: two
`learnable` environments sample through the trainer's policy server at T=0.7 and T=1.3 (the
rollout default stays 1.0) and say so in `generation_params`; on the first step, where the data is
on-policy, verl's recomputed old log-probs equal the sampler's for every row of the mixed batch.
Started from Python through the simplified API's `SimpleAtroposTrainer` (the launcher as a class)."""

import pytest
from omegaconf import OmegaConf

from recipe.atropos.examples.demo_cpu import DEMO_CONFIG
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2
from recipe.atropos.simplified_api import SimpleAtroposTrainer

TEMPERATURES = {"learnable_cool": 0.7, "learnable_hot": 1.3}


def test_old_log_probs_match_the_sampler_at_each_rows_temperature(tmp_path):
    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    raw = OmegaConf.load(DEMO_CONFIG)
    raw.run_dir = str(tmp_path / "run")
    template = OmegaConf.to_container(raw.environments[0])
    # Each environment fills at least 40% of every batch, so the first batch mixes both temperatures.
    raw.environments = [
        {**template, "name": name, "weight": 0.5, "group_size": 4,
         "args": ["--env.temperature", str(temperature), "--env.min_batch_allocation", "0.4",
                  "--env.max_batches_offpolicy", "1"]}
        for name, temperature in TEMPERATURES.items()
    ]
    OmegaConf.save(raw, tmp_path / "temperatures.yaml")
    trainer = SimpleAtroposTrainer(tmp_path / "temperatures.yaml", trainer_overrides=[
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        "trainer.total_training_steps=1", "actor_rollout_ref.rollout.n=4", "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "trainer.atropos.fallback_to_grpo=false",
        "actor_rollout_ref.rollout.temperature=1.0", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        # The actor in float32 like the hf_cpu server: verl's bf16 autocast alone is a 6e-2 gap.
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    ])
    assert trainer.weights == {"learnable_cool": 0.5, "learnable_hot": 0.5}
    result = trainer.train()
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, log
    [step] = result.steps
    assert step["atropos/from_atropos"] == 1.0
    assert step["atropos/sampling_temperature_min"] == pytest.approx(0.7)
    assert step["atropos/sampling_temperature_max"] == pytest.approx(1.3)
    assert step["atropos/rows_at_default_temperature"] == 0
    assert step["atropos/rows_without_logprobs"] == 0
    assert step["atropos/rollout_logprob_gap_max"] < 1e-4, step
    assert result.leftover_pids == []
