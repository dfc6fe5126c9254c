"""AtroposEnvironmentClient against the real atroposlib `run-api` server (no mock)."""

import math
import time

import numpy as np
import pytest
import requests
import torch
from verl.trainer.ppo.ray_trainer import compute_advantage

from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.data.errors import (
    AtroposNotRegisteredError,
    AtroposProtocolError,
    AtroposRegistrationError,
    AtroposUnavailableError,
)
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.tests.helpers.api_helpers import GROUP, fast_client, started_trainer, token_headers
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def expected_response_advantages(raw, eps=1e-6):
    """Per sequence: the advantages expected on its completion positions, from the posted group."""
    scores = raw["scores"]
    n = len(scores)
    mean, std = (0.0, 1.0) if n == 1 else (sum(scores) / n, float(np.std(scores, ddof=1)))
    out = []
    for i, mask in enumerate(raw["masks"]):
        completion = [j for j, m in enumerate(mask) if m != -100]
        if raw["advantages"] is not None:
            out.append([raw["advantages"][i][j] for j in completion])
        else:
            out.append([(scores[i] - mean) / (std + eps)] * len(completion))
    return out


def test_register_checks_info_and_refuses_silently_ignored_registration(run_api):
    client = fast_client(run_api.url)
    assert client.health()
    client.register(batch_size=8, max_token_len=64, num_steps=3)
    assert client.info() == {"batch_size": 8, "max_token_len": 64}
    with pytest.raises(AtroposRegistrationError, match="batch_size=8"):
        fast_client(run_api.url).register(batch_size=16, max_token_len=64, num_steps=3)


def test_batch_before_registration_is_a_typed_error(run_api):
    with pytest.raises(AtroposNotRegisteredError):
        fast_client(run_api.url).get_batch()


def test_mixed_batches_drop_bad_groups_survive_a_lost_batch_and_match_reference_advantages(run_api):
    url = run_api.url
    client = started_trainer(url)
    env_adv = register_env(url, name="with_adv", weight=0.7, group_size=GROUP, max_token_length=64)
    env_plain = register_env(url, name="plain", weight=0.3, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(11)

    def adv_group():
        return make_group(rng, group_size=GROUP, with_advantages=True, with_logprobs=True)

    def plain_group():
        return make_group(rng, group_size=GROUP)

    bad_adv = adv_group()
    bad_adv["advantages"][1] = bad_adv["advantages"][1][:-1]
    bad_masks = plain_group()
    bad_masks["masks"][2] = bad_masks["masks"][2] + [-100]
    bad_scores = plain_group()
    bad_scores["scores"] = bad_scores["scores"][:-1]
    nan_group = plain_group()
    nan_group["scores"][0] = math.nan
    # Queue order; the server packs consecutive pairs into batches of 8 and serves them newest first.
    posted = [
        ("good", adv_group(), env_adv),
        ("good", plain_group(), env_plain),
        ("bad:advantages", bad_adv, env_adv),
        ("bad:masks", bad_masks, env_plain),
        ("bad:scores", bad_scores, env_plain),
        ("good", plain_group(), env_plain),
        ("lost", nan_group, env_plain),  # NaN: the server pops this batch, then fails to encode it
        ("lost", plain_group(), env_plain),
        ("good", adv_group(), env_adv),
        ("good", plain_group(), 99),  # unknown env_id: the server accepts it, and so do we
    ]
    for _, group, env_id in posted:
        post_groups(url, [group], env_id=env_id)
    post_groups(url, [{"tokens": [], "masks": [], "scores": []}])  # empty group: never served by the server

    received = []
    invalid = []
    while (batch := client.poll_batch(max_wait_time=1.0)) is not None:
        received.extend(batch.groups)
        invalid.extend(batch.invalid)

    # The 500 came after the server popped the batch: counted as a possible loss, not retried blindly.
    assert client.stats.server_errors == 1 and client.stats.batch_requests_failed_after_send == 1
    assert sorted(bad.field for bad in invalid) == ["advantages", "masks", "scores"]
    assert all(f"env_id={bad.env_id}" in bad.message for bad in invalid)
    assert client.stats.invalid_groups == 3
    assert run_api_status(url)["queue_size"] == 1  # the empty group stays queued on the server

    good = [group for kind, group, _ in posted if kind == "good"]
    key = {tuple(map(tuple, g["tokens"])): g for g in good}
    assert sorted(key) == sorted(tuple(tuple(s.tolist()) for s in g.split(g.tokens)) for g in received)
    assert sorted(g.env_id for g in received) == sorted([env_adv, env_plain, env_plain, env_adv, 99])

    data = scored_data_to_dataproto(received, pad_token_id=0, max_prompt_length=16, max_response_length=16)
    data = compute_advantage(data, adv_estimator="grpo")
    row = 0
    for group in received:
        raw = key[tuple(tuple(s.tolist()) for s in group.split(group.tokens))]
        for expected in expected_response_advantages(raw):
            mask = data.batch["response_mask"][row].bool()
            torch.testing.assert_close(data.batch["advantages"][row][mask], torch.tensor(expected, dtype=torch.float32))
            row += 1
    assert row == data.batch["advantages"].shape[0] == 5 * GROUP


def run_api_status(url):
    return requests.get(f"{url}/status", timeout=5, headers=token_headers()).json()


def test_trajectory_batch_flattens_sequences(run_api):
    client = started_trainer(run_api.url)
    env = register_env(run_api.url, name="e", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(3)
    groups = [make_group(rng, group_size=GROUP, with_advantages=True), make_group(rng, group_size=GROUP)]
    post_groups(run_api.url, groups, env_id=env)
    flat = client.trajectory_batch(max_wait_time=5.0)
    assert flat is not None
    assert sorted(map(tuple, flat.tokens)) == sorted(tuple(s) for g in groups for s in g["tokens"])
    assert sorted(flat.groups) == [0] * GROUP + [1] * GROUP
    assert sum(a is None for a in flat.advantages) == GROUP
    assert flat.metadata["env_ids"] == [env, env] and flat.metadata["invalid_groups"] == []


def test_empty_queue_polling_backs_off_and_returns_none_in_time(run_api):
    client = started_trainer(run_api.url)
    calls = []
    client.session.hooks["response"].append(lambda r, *a, **k: calls.append(r.url))
    started = time.monotonic()
    assert client.poll_batch(max_wait_time=1.5) is None
    assert time.monotonic() - started >= 1.4  # kept polling for the whole wait
    # Doubling from 0.05 s: about 6 polls in 1.5 s, where a fixed 0.05 s interval would make 30.
    assert 3 <= len(calls) <= 10


def test_client_error_is_not_retried(run_api):
    client = fast_client(run_api.url, retry_attempts=5)
    with pytest.raises(AtroposProtocolError, match="HTTP 422"):
        client._request("POST", "/register", json_body={"batch_size": 8})  # missing required fields
    assert client.stats.retries == 0


def test_stopped_api_raises_unavailable_within_budget(run_api):
    client = started_trainer(run_api.url)
    run_api.stop()
    client = fast_client(run_api.url, retry_attempts=100, retry_delay=0.2, max_wait_time=3.0)
    started = time.monotonic()
    with pytest.raises(AtroposUnavailableError, match="unreachable for GET /batch"):
        client.poll_batch()
    assert time.monotonic() - started >= 2.5  # kept trying for (about) the whole budget
    assert client.stats.retries >= 2 and client.stats.batch_requests_failed_after_send == 0
    assert not client.health()
