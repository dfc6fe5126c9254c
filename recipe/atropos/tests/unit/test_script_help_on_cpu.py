"""`--help` of every script prints its usage before anything is installed: run from a copy of
scripts/ alone (no pyproject.toml, no virtual environment), where an install would fail."""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[4] / "scripts"


@pytest.mark.parametrize("script", sorted(path.name for path in SCRIPTS.glob("*.sh") if path.name != "usage.sh"))
def test_help_prints_before_any_install(tmp_path, script):
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    out = subprocess.run(["bash", str(tmp_path / "scripts" / script), "--help"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    header = (SCRIPTS / script).read_text().splitlines()[1].removeprefix("# ")
    assert out.returncode == 0 and out.stdout.startswith(header), out.stdout + out.stderr
    assert not (tmp_path / ".venv").exists()
