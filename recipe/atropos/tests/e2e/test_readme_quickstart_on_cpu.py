"""A newcomer follows README.md's "Train on your own environment": the environment and the launcher
YAML are taken from the README's code blocks as they stand, written into a fresh folder beside the
demo's outputs (made by the demo's own code, as `scripts/demo.sh` would), and the README's command
trains them (4 steps instead of 20, one Hydra override appended). What the README says the user gets
is checked: the logs, one metrics line per step with the environment's reward, the samples file."""

import json
import re
import subprocess
import sys
from pathlib import Path

from recipe.atropos.examples.demo_cpu import make_demo_inputs

ROOT = Path(__file__).resolve().parents[4]
STEPS = 4


def readme_block(title: str) -> str:
    """The body of the README's fenced block whose info string names `title`."""
    match = re.search(rf"^```\w+ title={re.escape(title)}\n(.*?)^```", (ROOT / "README.md").read_text(),
                      re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no code block titled {title}"
    return match.group(1)


def readme_command() -> list[str]:
    """The README's training command, run with this interpreter's environment."""
    match = re.search(r"^\.venv/bin/(verl-atropos) (--config my_run\.yaml)$", (ROOT / "README.md").read_text(),
                      re.MULTILINE)
    assert match, "README.md no longer says `.venv/bin/verl-atropos --config my_run.yaml`"
    return [str(Path(sys.executable).parent / match.group(1)), *match.group(2).split()]


def test_the_readme_trains_a_newcomers_environment(tmp_path):
    make_demo_inputs(tmp_path / "outputs" / "demo")
    (tmp_path / "my_env.py").write_text(readme_block("my_env.py"))
    (tmp_path / "my_run.yaml").write_text(readme_block("my_run.yaml"))
    run = subprocess.run([*readme_command(), f"trainer.total_training_steps={STEPS}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    run_dir = tmp_path / "outputs" / "my_run"
    trainer_log = (run_dir / "logs" / "trainer.log").read_text(errors="replace") if (run_dir / "logs").exists() else ""
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + trainer_log[-3000:]

    assert {"run-api.log", "trainer.log", "env_spaces_0.log"} <= {p.name for p in (run_dir / "logs").iterdir()}
    steps = [json.loads(line)["data"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step in steps if "training/global_step" in step]
    assert [step["training/global_step"] for step in steps] == list(range(1, STEPS + 1))
    assert all(step["atropos/from_atropos"] == 1.0 and step["atropos/env_share/spaces"] == 1.0 for step in steps)
    assert all(0.0 <= step["atropos/env_mean_score/spaces"] <= 1.0 for step in steps)
    samples = tmp_path / "checkpoints" / "verl_atropos" / "quickstart_cpu" / "atropos_samples.jsonl"
    assert {json.loads(line)["step"] for line in samples.read_text().splitlines()} == set(range(1, STEPS + 1))
