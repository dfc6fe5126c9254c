"""Silent environments are named: an environment alive but sending nothing is warned about (with
its log and the likely causes), what each one sent is counted, and one that sends is not flagged."""

from pathlib import Path
from types import SimpleNamespace

from omegaconf import OmegaConf

from recipe.atropos.launcher.env_activity import EnvActivityMonitor, trained_groups
from recipe.atropos.examples.demo_cpu import DEMO_CONFIG, WORD_PIECE_DIRECTION
from recipe.atropos.launcher.services import run_services
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2


HOPELESS_ENV = Path(__file__).parents[1] / "helpers" / "hopeless_env.py"


def slot(name, env_id, alive=True):
    process = SimpleNamespace(running=lambda: alive, log_path=f"/logs/env_{name}_0.log")
    return SimpleNamespace(spec=SimpleNamespace(name=name), env_id=env_id, process=process)


def test_silence_is_warned_once_per_interval_and_progress_resets_it(run_api):
    """The real run-api with nothing queued; time is passed in, so the test does not wait."""
    monitor = EnvActivityMonitor(run_api.url, silent_after=60.0)
    slots = [slot("math", 0), slot("code", 1)]
    assert monitor.update(slots, [], now=0.0) == []
    assert monitor.update(slots, [{"atropos/env_groups/code": 2.0}], now=59.0) == []
    [warning] = monitor.update(slots, [{"atropos/env_groups/code": 2.0}], now=61.0)
    assert "environment math (env_id 0)" in warning and "/logs/env_math_0.log" in warning
    assert "filters drop every group" in warning and "posts to the API fail" in warning
    assert monitor.update(slots, [{"atropos/env_groups/code": 2.0}], now=100.0) == []  # not again before 60 s
    assert len(monitor.update(slots, [{"atropos/env_groups/code": 2.0}], now=122.0)) == 2  # code silent too now
    assert monitor.update(slots, [{"atropos/env_groups/code": 2.0}, {"atropos/env_groups/math": 1.0,
                                                                     "atropos/env_groups/code": 1.0}], now=130.0) == []
    assert monitor.summary() == "math 0/1, code 0/3"
    assert monitor.update([slot("math", 0, alive=False)], [], now=1000.0) == []  # dead: the restart logic's job


def test_trained_groups_sum_the_steps_per_environment():
    steps = [{"atropos/env_groups/a": 2.0, "atropos/env_share/a": 1.0}, {"atropos/env_groups/a": 1.0,
                                                                          "atropos/env_groups/b": 3.0}]
    assert trained_groups(steps) == {"a": 3, "b": 3}


def test_an_environment_whose_filters_drop_every_group_is_named_while_the_run_trains(tmp_path):
    model = build_tiny_qwen2(tmp_path / "tiny", word_piece_direction=WORD_PIECE_DIRECTION)
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    raw = OmegaConf.load(DEMO_CONFIG)
    raw.run_dir = str(tmp_path / "run")
    raw.enforce_mix = False  # otherwise no batch forms while one environment has nothing queued
    raw.status_interval = 1.0
    raw.silent_env_warning_s = 5.0
    sender = {**OmegaConf.to_container(raw.environments[0]), "group_size": 4}
    silent = {**sender, "name": "hopeless", "module": None, "path": str(HOPELESS_ENV)}
    raw.environments = [sender, silent]
    OmegaConf.save(raw, tmp_path / "silent.yaml")
    result = run_services(load_launcher_config(tmp_path / "silent.yaml"), [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
        "trainer.total_training_steps=4", "actor_rollout_ref.rollout.n=4", "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "trainer.atropos.fallback_to_grpo=false",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ])
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, log
    assert all(s["atropos/from_atropos"] == 1.0 for s in result.steps)
    assert trained_groups(result.steps) == {"learnable": 2 * len(result.steps)}
    named = [w for w in result.env_warnings if w.startswith("environment hopeless ")]
    assert named, result.env_warnings
    assert str(result.run_dir / "logs" / "env_hopeless_0.log") in named[0]
    assert "0 trained so far" in named[0]
    assert result.leftover_pids == []
