"""Nobody but the run's environments feeds the trainer: the real `run-api` (atroposlib's app behind
launcher/run_api_server.py) and the real policy server answer only requests carrying the run's
token, refuse `/reset_data`, cap bodies and requests, and refuse to listen beyond loopback
without a token. The session's token comes from conftest (ATROPOS_RUN_TOKEN), as a launcher run's does."""

import asyncio
import os
import subprocess
import sys

import aiohttp
import numpy as np
import pytest
import requests

from recipe.atropos.auth.bind_check import InsecureBindError
from recipe.atropos.auth.run_token import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    RunTokenError,
    auth_headers,
    basic_auth_header,
    make_run_token,
    read_token_file,
    run_token,
    url_with_credentials,
    write_token_file,
)
from recipe.atropos.envs.atropos_compat.run_credentials import with_run_token
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.launcher.api_process import RunApiProcess, free_loopback_port
from recipe.atropos.launcher.config import load_launcher_config
from recipe.atropos.launcher.services import ServicesLauncher
from recipe.atropos.policy_server.routes import RequestLimits
from recipe.atropos.policy_server.service import InferenceService
from recipe.atropos.tests.helpers.api_helpers import GROUP, started_trainer
from recipe.atropos.tests.helpers.launcher_helpers import DEMO_CONFIG, ROOT
from recipe.atropos.tests.helpers.policy_server_helpers import serving
from recipe.atropos.tests.helpers.scored_data_factory import make_group

FORGED_TOKENS = [777, 778, 779, 780, 781, 782, 783, 784]


def forged_group(env_id=None) -> dict:
    """What an attacker posts: a group scored 1 with an advantage on every token."""
    masks = [-100, -100] + FORGED_TOKENS[2:]
    return {"tokens": [FORGED_TOKENS] * GROUP, "masks": [masks] * GROUP, "scores": [1.0] * GROUP,
            "advantages": [[5.0] * len(FORGED_TOKENS)] * GROUP, "env_id": env_id}


def without_token_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}


def test_run_api_answers_only_requests_carrying_the_run_token(run_api):
    trainer = started_trainer(run_api.url, batch_size=GROUP)  # sends the token (it refuses to start without one)
    env_id = register_env(run_api.url, name="real", weight=1.0, group_size=GROUP, max_token_length=64)
    url = run_api.url
    anonymous = {
        "POST /scored_data_list": requests.post(f"{url}/scored_data_list", json=[forged_group(env_id)], timeout=10),
        "POST /scored_data": requests.post(f"{url}/scored_data", json=forged_group(env_id), timeout=10),
        "POST /register-env": requests.post(f"{url}/register-env", timeout=10, json={
            "max_token_length": 64, "desired_name": "intruder", "weight": 1.0, "group_size": GROUP,
            "min_batch_allocation": 1.0}),
        "POST /register": requests.post(f"{url}/register", json={}, timeout=10),
        "GET /batch": requests.get(f"{url}/batch", timeout=10),
        "GET /status": requests.get(f"{url}/status", timeout=10),
        "wrong token": requests.get(f"{url}/batch", timeout=10, headers=auth_headers(make_run_token())),
        "wrong Basic password": requests.get(f"{url}/status", timeout=10,
                                             headers={"Authorization": basic_auth_header("atropos", "x" * 40)}),
    }
    assert {what: answer.status_code for what, answer in anonymous.items()} == {what: 401 for what in anonymous}
    # /reset_data wipes the queue and every registration with a plain GET: refused, token or not.
    assert requests.get(f"{url}/reset_data", timeout=10).status_code == 403
    assert requests.get(f"{url}/reset_data", timeout=10, headers=auth_headers(run_token())).status_code == 403
    assert requests.get(f"{url}/", timeout=10).json() == {"message": "AtroposLib API"}  # the open health probe

    real = make_group(np.random.default_rng(0), group_size=GROUP, vocab=500)
    post_groups(url, [real], env_id=env_id)  # the environment's way: the token as a Bearer header
    batch = trainer.get_batch()
    assert batch is not None and [[row.tolist() for row in g.split(g.tokens)] for g in batch.groups] == [real["tokens"]]
    status = requests.get(f"{url}/status-env", json={"env_id": env_id}, timeout=10, headers=auth_headers(run_token()))
    assert status.ok and status.json()["self_queue_size"] == 0  # nothing forged was queued behind it


def test_an_unmodified_environment_reaches_run_api_with_the_token_in_its_url(run_api):
    """atroposlib's environments build every request from --env.rollout_server_url with aiohttp, which
    sends URL credentials as HTTP Basic: the URL run_env hands them works, the bare one is refused."""
    started_trainer(run_api.url, batch_size=GROUP)

    async def register(base: str) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/register-env", json={
                    "max_token_length": 64, "desired_name": "env", "weight": 1.0, "group_size": GROUP}) as answer:
                return answer.status

    assert asyncio.run(register(run_api.url)) == 401
    assert asyncio.run(register(url_with_credentials(run_api.url, run_token()))) == 200


def test_run_env_hands_the_token_to_atroposlib_through_its_own_arguments():
    token = make_run_token()
    args = ["serve", "--env.rollout_server_url", "http://127.0.0.1:8000", "--openai.base_url", "http://h:1/v1"]
    assert with_run_token(args, token) == [
        "serve", "--env.rollout_server_url", f"http://atropos:{token}@127.0.0.1:8000",
        "--openai.base_url", "http://h:1/v1", "--openai.api_key", token]
    # a key the user gave is kept; without a policy server URL no key is added
    assert with_run_token(["serve", "--openai.base_url=x", "--openai.api_key=mine"], token)[-1] == "--openai.api_key=mine"
    assert with_run_token(["serve", "--env.rollout_server_url=http://a:1"], token) == [
        "serve", f"--env.rollout_server_url=http://atropos:{token}@a:1"]


def test_request_bodies_over_the_cap_are_refused(tmp_path):
    with RunApiProcess(log_path=tmp_path / "run-api.log", max_body_mb=0.01) as api:
        headers = {**auth_headers(run_token()), "Content-Type": "application/json"}
        large = requests.post(f"{api.url}/scored_data_list", data=b"[" + b" " * 20_000 + b"]", headers=headers,
                              timeout=10)
        assert large.status_code == 413

        def chunks():  # no Content-Length: the cap is enforced while reading
            yield b"["
            for _ in range(40):
                yield b" " * 1000
            yield b"]"

        assert requests.post(f"{api.url}/scored_data_list", data=chunks(), headers=headers, timeout=10).status_code == 413
        assert requests.get(f"{api.url}/status", headers=headers, timeout=10).ok


def test_a_listener_beyond_loopback_without_a_token_refuses_to_start(monkeypatch, tmp_path):
    for host, extra, says in (("0.0.0.0", ["--allow-no-token"], "--host=0.0.0.0 listens beyond loopback"),
                              ("127.0.0.1", [], "--allow-no-token")):
        started = subprocess.run([sys.executable, "-m", "recipe.atropos.launcher.run_api_server", "--host", host,
                                  "--port", str(free_loopback_port()), *extra], env=without_token_env(), cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 2 and TOKEN_ENV in started.stderr and says in started.stderr, started.stderr

    with pytest.raises(InsecureBindError, match=r"trainer\.atropos_inference\.host=0\.0\.0\.0"):
        InferenceService(None, None, "policy", host="0.0.0.0", token=None)

    monkeypatch.delenv(TOKEN_ENV)
    config = load_launcher_config(DEMO_CONFIG, [f"run_dir={tmp_path}", "api.host=0.0.0.0", "require_token=false"])
    with pytest.raises(InsecureBindError, match=r"api\.host=0\.0\.0\.0"):
        ServicesLauncher(config)
    # Without a token on loopback, the client refuses to start unless the setting says so.
    from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
    with pytest.raises(RunTokenError, match=r"trainer\.atropos\.require_token=false"):
        AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})
    assert "Authorization" not in AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1",
                                                            "require_token": False}).session.headers


def test_a_token_file_other_users_can_read_is_refused(tmp_path, monkeypatch):
    token = make_run_token()
    path = write_token_file(tmp_path / "token", token)
    assert oct(path.stat().st_mode & 0o777) == "0o600" and read_token_file(path) == token
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(path))
    assert run_token() == token
    path.chmod(0o644)
    with pytest.raises(RunTokenError, match="readable by other users"):
        run_token()


def test_the_policy_server_serves_only_requests_carrying_the_token_within_its_caps(tiny_model_dir):
    from atroposlib.envs.server_handling.server_baseline import APIServerConfig
    from atroposlib.envs.server_handling.vllm_server import VLLMServer

    token = make_run_token()
    with serving(tiny_model_dir, token=token, limits=RequestLimits(max_n=4, max_tokens=8)) as served:
        body = {"prompt": {"prompt_token_ids": [9707, 1879]}, "n": 2, "max_tokens": 4}
        anonymous = [requests.post(f"{served.url}/generate", json=body, timeout=60),
                     requests.post(f"{served.url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=60),
                     requests.post(f"{served.url}/v1/chat/completions", timeout=60, json={
                         "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
                     requests.post(f"{served.url}/generate", json=body, timeout=60, headers=auth_headers("y" * 40))]
        assert [answer.status_code for answer in anonymous] == [401] * 4
        assert served.proxy.stats.requests == 0  # none of them reached the replicas
        assert requests.get(f"{served.url}/health", timeout=10).ok  # the environments' probe stays open

        # atroposlib's own vllm client sends its api_key as a Bearer header on /health and /generate
        client = VLLMServer(APIServerConfig(model_name="policy", tokenizer_name=str(served.model_dir),
                                            server_type="vllm", base_url=f"{served.url}/v1", api_key=token,
                                            health_check=False))
        _, outputs, _, _ = asyncio.run(client._tokens_and_logprobs_completion_wrapper(
            model="policy", input_ids=[9707, 1879], n=4, max_tokens=8, temperature=1.0))
        assert len(outputs) == 4

        headers = auth_headers(token)
        too_many = requests.post(f"{served.url}/generate", json={**body, "n": 5}, headers=headers, timeout=60)
        too_long = requests.post(f"{served.url}/generate", json={**body, "max_tokens": 9}, headers=headers, timeout=60)
        too_many_prompts = requests.post(f"{served.url}/v1/completions", headers=headers, timeout=60,
                                         json={"prompt": ["a", "b", "c"], "n": 2, "max_tokens": 2})
        assert [a.status_code for a in (too_many, too_long, too_many_prompts)] == [400] * 3
        assert too_many.json()["error"]["param"] == "n" and "trainer.atropos_inference.max_n" in too_many.text
        assert too_long.json()["error"]["param"] == "max_tokens" and "atropos_inference.max_tokens" in too_long.text
        metrics = served.service.metrics()
        assert metrics["atropos/inference/refused_requests/unauthorized"] == 4
        assert metrics["atropos/inference/refused_requests/over_limit"] == 3
        assert metrics["atropos/inference/refused_requests"] == 7
        assert served.proxy.stats.requests == 1  # only atroposlib's authenticated request was generated
