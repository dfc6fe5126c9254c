"""verl_patches' CPU mode: only with VERL_PLATFORM=cpu; verl's own helpers then work on CPU."""

import json
import os
import subprocess
import sys

from recipe.atropos.launcher.api_process import free_loopback_port

PROBE = """
import json, os, torch
import verl, verl_patches
from verl.utils.device import get_device_name, get_nccl_backend, get_torch_device
from verl.utils.distributed import initialize_global_process_group_ray
report = {"applied": verl_patches.patches_applied()["cpu_mode"], "device": get_device_name(),
          "backend": get_nccl_backend(), "engine": [os.environ.get("VERL_ENGINE_DEVICE"), os.environ.get("VERL_ENGINE_VENDOR")]}
if report["applied"]:
    free, total = get_torch_device().mem_get_info()
    report["memory_ok"] = 0 < free <= total
    initialize_global_process_group_ray()
    x = torch.tensor([3.0])
    torch.distributed.all_reduce(x)
    report["dist_backend"] = torch.distributed.get_backend()
    report["all_reduce"] = x.item()
    torch.distributed.destroy_process_group()
print("REPORT " + json.dumps(report))
"""


def run_probe(extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_")}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, out.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_cpu_mode_runs_verls_process_group_over_gloo():
    env = {"VERL_PLATFORM": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_loopback_port()),
           "RANK": "0", "WORLD_SIZE": "1"}
    report = run_probe(env)
    assert report["applied"] is True
    assert (report["device"], report["backend"]) == ("cpu", "gloo")
    assert report["engine"] == ["cuda", "nvidia"]
    assert report["memory_ok"] is True
    assert report["dist_backend"] == "gloo" and report["all_reduce"] == 3.0


def test_cpu_mode_is_off_unless_asked_for():
    report = run_probe({})
    assert report["applied"] is False
    assert report["device"] == "cuda"  # verl's own fallback, untouched
    assert report["engine"] == [None, None]
