"""A launcher run with an intruder on the same host: while the CPU demo trains, a client without the
run's token keeps posting forged groups to run-api, pulling `/batch`, calling `/reset_data` and
`/register-env`, asking the policy server for completions, and joining the trainer's Ray cluster.
Every one is refused, nothing it sent is trained (every trained group is the registered
environment's), the refusals are counted,
and the token is in no process's command line."""

import json
import os
import threading
import time

import psutil
import requests

from recipe.atropos.auth.run_token import TOKEN_ENV
from recipe.atropos.examples.demo_cpu import DEMO_CONFIG
from recipe.atropos.examples.local_dataset import write_arithmetic_parquet
from recipe.atropos.examples.tiny_model import build_tiny_qwen2
from recipe.atropos.launcher.api_process import free_loopback_port
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.launcher.services import run_services
from recipe.atropos.tests.helpers.ray_helpers import env_without_tokens, gcs_address_of, try_to_join

STEPS = 2
FORGED = [777, 778, 779, 780, 781, 782, 783, 784]
ROUNDS = 400  # bounds the intruder's loop with its deadline
DEADLINE_S = 900.0


class Intruder(threading.Thread):
    """Tries every way in without the token until told to stop; records each answer's status."""

    def __init__(self, api_url: str, endpoint_file):
        super().__init__(daemon=True)
        self.api_url, self.endpoint_file = api_url, endpoint_file
        self.stop = threading.Event()
        self.answers: dict[str, set[int]] = {}
        self.token_on_command_lines: list[str] = []
        self.ray_answer: str | None = None  # what joining the trainer's Ray cluster without the token gave

    def record(self, what: str, send) -> None:
        try:
            self.answers.setdefault(what, set()).add(send().status_code)
        except requests.RequestException:
            pass  # not listening yet, or already stopped

    def run(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        forged = {"tokens": [FORGED] * 8, "masks": [[-100, -100, *FORGED[2:]]] * 8, "scores": [1.0] * 8,
                  "advantages": [[5.0] * len(FORGED)] * 8, "env_id": None}
        for _ in range(ROUNDS):
            if self.stop.wait(0.5) or time.monotonic() > deadline:
                return
            api = self.api_url
            self.record("POST /scored_data_list", lambda: requests.post(f"{api}/scored_data_list", json=[forged], timeout=5))
            self.record("GET /batch", lambda: requests.get(f"{api}/batch", timeout=5))
            self.record("GET /reset_data", lambda: requests.get(f"{api}/reset_data", timeout=5))
            self.record("POST /register-env", lambda: requests.post(f"{api}/register-env", timeout=5, json={
                "max_token_length": 64, "desired_name": "intruder", "weight": 1.0, "group_size": 8,
                "min_batch_allocation": 1.0}))
            if self.endpoint_file.exists():
                try:
                    base = json.loads(self.endpoint_file.read_text())["base_url"]
                except (ValueError, KeyError):
                    continue
                self.record("POST /generate", lambda: requests.post(f"{base}/generate", timeout=5, json={
                    "prompt": {"prompt_token_ids": [1, 2, 3]}, "n": 8, "max_tokens": 4}))
                self.record("POST /v1/completions", lambda: requests.post(f"{base}/v1/completions", timeout=5,
                                                                          json={"prompt": "hi", "max_tokens": 4}))
            self.scan_command_lines()
            self.join_ray_once()

    def join_ray_once(self) -> None:
        address = None if self.ray_answer else gcs_address_of(psutil.Process())
        if address:
            self.ray_answer = try_to_join(address, env_without_tokens())

    def scan_command_lines(self) -> None:
        token = os.environ[TOKEN_ENV]
        for child in psutil.Process().children(recursive=True):
            try:
                if any(token in arg for arg in child.cmdline()):
                    self.token_on_command_lines.append(" ".join(child.cmdline())[:200])
            except psutil.Error:
                pass


def test_a_launcher_run_trains_only_what_its_environments_sent(tmp_path):
    model = build_tiny_qwen2(tmp_path / "tiny")
    data = write_arithmetic_parquet(tmp_path / "train.parquet", n=16)
    port = free_loopback_port()
    run_dir = tmp_path / "run"
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={run_dir}", f"api.port={port}"])
    intruder = Intruder(f"http://127.0.0.1:{port}", run_dir / "inference_endpoint.json")
    intruder.start()
    try:
        result = run_services(config, [
            f"actor_rollout_ref.model.path={model}", f"data.train_files={data}", f"data.val_files={data}",
            f"trainer.total_training_steps={STEPS}", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            "trainer.atropos.fallback_to_grpo=false"])
    finally:
        intruder.stop.set()
        intruder.join(timeout=30)
    log = (result.run_dir / "logs" / "trainer.log").read_text(errors="replace")[-3000:]
    assert result.exit_code == 0, log
    assert [s["atropos/from_atropos"] for s in result.steps] == [1.0] * STEPS

    refused = {"GET /reset_data": {403}}
    assert set(intruder.answers) == {"POST /scored_data_list", "GET /batch", "GET /reset_data", "POST /register-env",
                                     "POST /generate", "POST /v1/completions"}, intruder.answers
    assert intruder.answers == {what: refused.get(what, {401}) for what in intruder.answers}
    assert result.steps[-1]["atropos/inference/refused_requests/unauthorized"] > 0  # counted by the policy server
    assert intruder.ray_answer == "refused"  # Ray's GCS checks the run's token too

    # A forged group (env_id None) that reached a batch would be trained as environment "None".
    for step in result.steps:
        trained_from = {key.removeprefix("atropos/env_groups/") for key in step if key.startswith("atropos/env_groups/")}
        assert trained_from == {"learnable"} and step["atropos/env_groups/learnable"] == step["atropos/batch_groups"]
    assert list(result.env_names.values()) == ["learnable"]  # the intruder never registered

    token_file = run_dir / "token"
    assert token_file.read_text().strip() == os.environ[TOKEN_ENV] and token_file.stat().st_mode & 0o777 == 0o600
    assert intruder.token_on_command_lines == []
    env_logs = "".join(p.read_text(errors="replace") for p in (run_dir / "logs").glob("env_*.log"))
    assert os.environ[TOKEN_ENV] not in env_logs  # atroposlib's start-up print of its config is masked
    assert result.leftover_pids == []
