"""The launcher leaves no process behind: on Ctrl-C mid-training, and when an environment crashes at
start; its servers listen on loopback only. It runs as users run it
(`python recipe/atropos/launch_atropos_verl_services.py ...`); every process under it is recorded by
PID while it runs and checked afterwards. A second Ctrl-C during cleanup does not abort it."""

import json
import re
import signal
import time
from urllib.parse import urlparse

from recipe.atropos.examples.soak_cpu import listening_addresses
from recipe.atropos.tests.helpers.launcher_helpers import alive, descendants, start_launcher

def test_ctrl_c_mid_training_stops_every_process(tmp_path):
    launcher, log = start_launcher(tmp_path)
    seen = {}
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while not (metrics.exists() and metrics.read_text().strip()):  # training has started
        assert launcher.poll() is None, (tmp_path / "launcher.log").read_text()[-3000:]
        assert time.monotonic() < deadline
        seen.update(descendants(launcher.pid))
        time.sleep(0.5)
    seen.update(descendants(launcher.pid))
    assert len(seen) >= 4  # run-api, trainer (+ Ray), environment
    # run-api and the policy server listen on loopback only (the config's defaults).
    endpoint = json.loads((tmp_path / "run" / "inference_endpoint.json").read_text())
    api_port = int(re.search(r"run-api pid \d+ at http://127\.0\.0\.1:(\d+)", (tmp_path / "launcher.log").read_text()).group(1))
    listening = listening_addresses(launcher.pid, {api_port, urlparse(endpoint["base_url"]).port})
    assert all(set(addresses) == {"127.0.0.1"} for addresses in listening.values()), listening
    launcher.send_signal(signal.SIGINT)
    # A second Ctrl-C as soon as cleanup has begun (an impatient user) must not abort it.
    while "stopping every process this launcher started" not in (tmp_path / "launcher.log").read_text():
        assert launcher.poll() is None and time.monotonic() < deadline + 120
        time.sleep(0.05)
    launcher.send_signal(signal.SIGINT)
    code = launcher.wait(timeout=120)
    log.close()
    text = (tmp_path / "launcher.log").read_text()
    assert code == 130, text[-3000:]
    assert "SIGINT during cleanup: still stopping" in text
    time.sleep(1)
    assert alive(seen) == []


def test_environment_crashing_at_start_fails_the_launch_and_stops_everything(tmp_path):
    launcher, log = start_launcher(tmp_path, "environments.0.module=recipe.atropos.envs.no_such_env")
    seen = {}
    while launcher.poll() is None:
        seen.update(descendants(launcher.pid))
        time.sleep(0.5)
    log.close()
    text = (tmp_path / "launcher.log").read_text()
    assert launcher.returncode == 1, text[-3000:]
    assert "env_learnable_0 exited with code 1 before registering" in text
    time.sleep(1)
    assert seen and alive(seen) == []
