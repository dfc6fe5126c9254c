"""A real BaseEnv process (ScriptedEnv) posting through a real run-api to our client."""

import os

import numpy as np

from transformers import AutoTokenizer

from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.examples.smoke_cpu import env_process

GROUP = 4


def test_base_env_groups_arrive_valid_with_and_without_advantages(run_api, tiny_model_dir, tmp_path):
    client = AtroposEnvironmentClient({"api_url": run_api.url, "max_wait_time": 90.0})
    client.register(batch_size=2 * GROUP, max_token_len=256, num_steps=10)
    assert client.get_batch() is None
    env = env_process(tiny_model_dir, run_api.url, tmp_path, group_size=GROUP).start()
    try:
        batches = [client.poll_batch() for _ in range(3)]
    finally:
        code = env.stop()
    log = (tmp_path / "env.log").read_text()
    assert all(b is not None for b in batches), log[-3000:]
    groups = [g for b in batches for g in b.groups]
    assert sum(b.num_sequences for b in batches) == 6 * GROUP
    assert client.stats.invalid_groups == 0
    assert {g.advantages is not None for g in groups} == {True, False}
    assert all(g.env_id == 0 for g in groups)
    # ScriptedEnv's score is the share of the target token (" yes") in the completion.
    target = AutoTokenizer.from_pretrained(tiny_model_dir).encode(" yes", add_special_tokens=False)[0]
    for g in groups:
        for tokens, masks, score in zip(g.split(g.tokens), g.split(g.masks), g.scores):
            completion = tokens[masks != -100]
            assert len(completion) >= 2
            assert score == (completion == target).sum() / len(completion)
        if g.advantages is not None:  # ScriptedEnv's per-token advantages: score - 0.3 on the completion
            for advantages, masks, score in zip(g.split(g.advantages), g.split(g.masks), g.scores):
                np.testing.assert_allclose(advantages[masks != -100], score - 0.3, rtol=1e-5, atol=1e-6)
    assert code is not None and not env.running()
    try:
        os.killpg(env.pid, 0)
        raise AssertionError("the environment's process group outlived stop()")
    except ProcessLookupError:
        pass
