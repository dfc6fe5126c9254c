"""verl_patches: pinned to REQUIRED_VERL.txt, loaded by verl's plugin mechanism everywhere."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from verl_patches.version_check import check_verl_version, required_verl_version

ROOT = Path(__file__).resolve().parents[4]


def test_pin_is_read_from_required_verl_txt():
    assert f"verl=={required_verl_version()}" == (ROOT / "REQUIRED_VERL.txt").read_text().strip()
    check_verl_version()  # the installed verl is the pinned one


def test_other_verl_version_is_refused_loudly(caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(ImportError, match="pinned to verl 0.9.1"):
        check_verl_version("0.8.0")
    assert any("NOT applied" in record.message and record.levelno == logging.ERROR for record in caplog.records)


PROBE = (
    "import sys, verl; "
    "loaded_early = 'verl.trainer.ppo.ray_trainer' in sys.modules; "
    "from verl.trainer.ppo import ray_trainer; "
    "print(loaded_early, getattr(ray_trainer.compute_advantage, '__atropos_patched__', False))"
)


def test_plain_import_verl_applies_the_patch_lazily():
    """A fresh interpreter that only imports verl gets the patch via the `verl.plugins` entry point,
    without verl's trainer module being imported up front."""
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": "auto"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, check=True)
    assert out.stdout.split()[-2:] == ["False", "True"]


def test_patch_is_active_in_a_ray_worker():
    @ray.remote(num_cpus=1)
    def probe():
        from verl.trainer.ppo import ray_trainer

        return getattr(ray_trainer.compute_advantage, "__atropos_patched__", False)

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.get(probe.remote(), timeout=300) is True
    finally:
        ray.shutdown()
