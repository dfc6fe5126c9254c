"""Entry points compose a valid verl config: the shell script's knobs and the Hydra entry's guards."""

import os
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.atropos.main_atropos import run_atropos

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "recipe" / "atropos" / "run_qwen2_5-3b_atropos_grpo.sh"


def test_shell_script_knobs_reach_the_config():
    """`--cfg job` makes Hydra compose (every override key checked against verl's schema) and print."""
    env = {**os.environ, "MODEL_PATH": "/models/qwen", "ROLLOUT_N": "4", "LR": "1e-5", "LORA_RANK": "16",
           "ATROPOS_API_URL": "http://10.1.2.3:8000", "NNODES": "2", "TOTAL_STEPS": "7"}
    out = subprocess.run(["bash", str(SCRIPT), "trainer.save_freq=3", "--cfg", "job"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    composed = OmegaConf.create(out.stdout)
    assert composed.actor_rollout_ref.model.path == "/models/qwen"
    assert composed.actor_rollout_ref.rollout.n == 4 and composed.actor_rollout_ref.model.lora_rank == 16
    assert composed.actor_rollout_ref.actor.optim.lr == 1e-5
    assert composed.trainer.atropos.api_url == "http://10.1.2.3:8000"
    assert (composed.trainer.nnodes, composed.trainer.total_training_steps, composed.trainer.save_freq) == (2, 7, 3)
    assert composed.trainer_cls == "recipe.atropos.grpo_atropos_trainer.RayGRPOAtroposTrainer"


@pytest.mark.parametrize(
    ("override", "message"),
    [({"trainer": {"use_v1": True}}, "legacy trainer"), ({"trainer_cls": None}, "trainer_cls is empty")],
)
def test_hydra_entry_refuses_settings_that_would_bypass_the_trainer(small_trainer_config, override, message):
    config = OmegaConf.merge(small_trainer_config(), override)
    with pytest.raises(ValueError, match=message):
        run_atropos(config)


def test_python_example_composes_its_knobs_with_overrides_winning():
    from recipe.atropos.example_gsm8k_grpo import KNOBS, build_config

    config = build_config(overrides=["actor_rollout_ref.rollout.n=2"])
    assert config.actor_rollout_ref.model.path == KNOBS["actor_rollout_ref.model.path"]
    assert config.data.train_batch_size == KNOBS["data.train_batch_size"]
    assert config.actor_rollout_ref.rollout.n == 2


@pytest.mark.parametrize("launcher_yaml", ["atropos_integration.yaml", "demo_cpu.yaml"])
def test_launcher_configs_compose_the_trainer_command(launcher_yaml, tmp_path):
    """The launcher's trainer command (its own overrides plus the YAML's) passes Hydra's `--cfg job`."""
    import sys

    from recipe.atropos.launcher.services import ServicesLauncher
    from recipe.atropos.launcher.config import RECIPE_CONFIG_DIR, load_launcher_config

    config = load_launcher_config(RECIPE_CONFIG_DIR / launcher_yaml, [f"run_dir={tmp_path}"])
    command = ServicesLauncher(config, ["actor_rollout_ref.model.path=/models/m"]).trainer_command()
    assert command[0] == sys.executable
    out = subprocess.run([*command, "--cfg", "job"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    composed = OmegaConf.create(out.stdout)
    assert composed.trainer.atropos_inference.endpoint_file == str(tmp_path / "inference_endpoint.json")
    assert composed.trainer.atropos.env_names_file == str(tmp_path / "env_names.json")
    assert composed.actor_rollout_ref.model.path == "/models/m"
    assert composed.trainer.atropos.max_policy_lag == 2
    # Each environment's share of admission control's window: its weight's.
    assert dict(composed.trainer.atropos_inference.admission_shares) == pytest.approx(config.weights)
