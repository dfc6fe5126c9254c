"""The environments we ship run as real Atropos BaseEnv processes against the trainer's policy
server (atroposlib's `process` mode: groups written to JSONL instead of posted), offline, started as
the launcher starts them (`run_env`, the run's token in their environment) against a policy server
that requires the token."""

import json
import subprocess
import sys

import pytest

from recipe.atropos.auth.run_token import TOKEN_ENV, run_token
from recipe.atropos.tests.helpers.policy_server_helpers import serving

ENVS = {  # name: (module, extra flags)
    "gsm8k": ("recipe.atropos.envs.gsm8k_env", ["--env.num_items", "4"]),
    "math": ("recipe.atropos.envs.math_env", ["--env.num_items", "6"]),
    "code": ("recipe.atropos.envs.code.code_env", ["--env.num_items", "4"]),
    "learnable": ("recipe.atropos.envs.learnable_env", ["--env.token_advantages", "true"]),
}


@pytest.fixture(scope="module")
def policy_server(tiny_model_dir):
    with serving(tiny_model_dir, token=run_token()) as served:
        yield served


@pytest.mark.parametrize("name", sorted(ENVS))
def test_env_generates_scored_groups_through_the_policy_server(name, policy_server, tmp_path):
    out = tmp_path / f"{name}.jsonl"
    module, flags = ENVS[name]
    command = [
        sys.executable, "-m", "recipe.atropos.envs.run_env", module, "process",
        "--env.data_path_to_save_groups", str(out), "--env.total_steps", "2", "--env.group_size", "2",
        "--env.max_token_length", "512", "--env.use_wandb", "false",
        "--env.tokenizer_name", str(policy_server.model_dir),
        "--openai.base_url", f"{policy_server.url}/v1", "--openai.model_name", "policy",
        "--openai.server_type", "vllm", "--openai.tokenizer_name", str(policy_server.model_dir),
        "--slurm", "false",
        "--env.max_completion_tokens", "8", *flags,
    ]
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin",
           TOKEN_ENV: run_token()}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    groups = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(groups) == 2
    for group in groups:
        assert len(group["tokens"]) == len(group["masks"]) == len(group["scores"]) == 2
        for tokens, masks, logprobs in zip(group["tokens"], group["masks"], group["inference_logprobs"]):
            completion = [t for t in masks if t != -100]
            assert len(tokens) == len(masks) == len(logprobs) and 1 <= len(completion) <= 8
            assert tokens[-len(completion):] == completion  # masks label the completion's own tokens
            assert policy_server.proxy.registry.lookup(completion) == 0  # served by our policy server
        if name == "learnable":
            assert all(0.0 <= s <= 1.0 for s in group["scores"]) and len(group["advantages"]) == 2
        else:
            assert set(group["scores"]) <= {0.0, 1.0}
    assert policy_server.proxy.stats.completions >= 4
