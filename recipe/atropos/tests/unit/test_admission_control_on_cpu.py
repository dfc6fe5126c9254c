"""Admission control at the policy server (policy_server/admission.py): environments' requests are
held while what they would add could not be trained within max_policy_lag steps, released as the
trainer pulls batches and the version moves on, let through when the trainer starves (a group needing more requests than the window
has left cannot deadlock), and never answered with an error for it.

The real HTTP app and proxy over verl_patches' real HFCPUServer with the tiny Qwen2, in-process
instead of as a Ray actor (policy_server_helpers.serving)."""

import threading

import pytest
import requests

from recipe.atropos.atropos_ray_trainer import check_admission_control
from recipe.atropos.auth.run_token import make_run_token
from recipe.atropos.policy_server.admission import AdmissionControl
from recipe.atropos.policy_server.settings import InferenceConfig
from recipe.atropos.tests.helpers.policy_server_helpers import serving, wait_for

SEQUENCES_PER_STEP = 4
MAX_POLICY_LAG = 2  # the window: 2 steps x 4 = 8 completions


def _request(url, results, n=4, environment=None):
    """An environment's request for a group of `n` in a thread (under its path: `environment`); its
    status and answer land in `results`."""
    path = f"/env-{environment}/generate" if environment else "/generate"

    def run():
        answer = requests.post(f"{url}{path}", json={"prompt": {"prompt_token_ids": [1, 2, 3]}, "n": n,
                                                        "max_tokens": 4, "logprobs": 0}, timeout=60)
        results.append((answer.status_code, answer.json()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _admission(starved_grace_s=600.0, max_hold_s=600.0, shares=None):
    return AdmissionControl(SEQUENCES_PER_STEP, MAX_POLICY_LAG, shares=shares, starved_grace_s=starved_grace_s,
                            max_hold_s=max_hold_s)


def test_requests_beyond_the_window_wait_for_the_trainer_to_pull(tiny_model_dir):
    admission = _admission()
    with serving(tiny_model_dir, admission=admission) as served:
        results = []
        for _ in range(2):  # 8 completions: the window is full
            _request(served.url, results).join(60)
        assert [status for status, _ in results] == [200, 200]
        assert admission.outstanding() == 8
        held = _request(served.url, results)
        wait_for(lambda: admission.stats.held_requests == 1, "the third group's request to be held")
        assert served.proxy.stats.requests == 2  # it never reached the replica
        # The trainer's own probe (the weight-sync check) is not an environment's: it goes straight on.
        assert len(served.service.generate([1, 2, 3], {"max_tokens": 2}, timeout=60)) == 1
        # A new version still inside the window frees nothing by itself.
        served.service.resume(policy_version=1)
        assert admission.stats.held_requests == 1 and len(results) == 2
        # The trainer pulled a group of the version-0 completions: room for the held one.
        served.server.set_global_steps(1)
        served.service.delivered([(None, 0)] * 4)
        held.join(60)
        assert [status for status, _ in results] == [200, 200, 200]  # held, never refused
        assert results[2][1]["policy_version"] == 1
        assert admission.outstanding() == 8  # 4 left of version 0, 4 of version 1
        metrics = served.service.metrics()
        assert metrics["atropos/inference/admission/held_requests"] == 1
        assert metrics["atropos/inference/admission/held_s"] > 0
        assert metrics["atropos/inference/admission/capacity"] == 8
        # Once version 0 is more than max_policy_lag old, what it left unpulled can no longer be trained
        # fresh: it leaves the window.
        served.service.resume(policy_version=3)
        assert admission.outstanding() == 4


def test_each_environment_is_held_to_its_share_of_the_window(tiny_model_dir):
    """An environment that produces faster than its share is trained cannot take the others' room
    (its extra groups would wait in the queue and go stale)."""
    admission = _admission(shares={"fast": 1.0, "slow": 1.0})  # 4 completions each
    with serving(tiny_model_dir, admission=admission) as served:
        results = []
        _request(served.url, results, environment="fast").join(60)
        held = _request(served.url, results, environment="fast")
        wait_for(lambda: admission.stats.held_requests == 1, "the fast environment's second group to be held")
        _request(served.url, results, environment="slow").join(60)  # the slow one's part is free
        assert len(results) == 2 and admission.outstanding("slow", everyone=False) == 4
        # The trainer pulled the fast environment's group: its part has room again.
        served.service.delivered([("fast", 0)] * 4)
        held.join(60)
        assert [status for status, _ in results] == [200, 200, 200]
        assert admission.outstanding("fast", everyone=False) == 4
        metrics = served.service.metrics()
        assert metrics["atropos/inference/admission/outstanding/fast"] == 4
        assert metrics["atropos/inference/admission/outstanding/slow"] == 4


def test_an_environments_path_keeps_the_token_check(tiny_model_dir):
    token = make_run_token()
    with serving(tiny_model_dir, token=token) as served:
        body = {"prompt": {"prompt_token_ids": [1, 2, 3]}, "max_tokens": 2}
        assert requests.post(f"{served.url}/env-fast/generate", json=body, timeout=60).status_code == 401
        assert requests.get(f"{served.url}/env-fast/health", timeout=10).status_code == 200  # open, as /health
        answer = requests.post(f"{served.url}/env-fast/generate", json=body, timeout=60,
                               headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and len(answer.json()["token_ids"]) == 1


def test_a_group_of_several_requests_cannot_deadlock_a_starved_trainer(tiny_model_dir):
    """A group needing 3 requests of 4 in a window of 8: its last request is held, so the group never
    reaches the trainer and no step can free the window. For every grace period the trainer waits for
    data the window grows by a step, so the request goes on; once the batch is there it is back."""
    admission = _admission(starved_grace_s=0.2)
    with serving(tiny_model_dir, admission=admission) as served:
        results = []
        for _ in range(2):
            _request(served.url, results).join(60)
        last = _request(served.url, results)
        wait_for(lambda: admission.stats.held_requests == 1, "the group's last request to be held")
        served.service.trainer_waiting(True)
        last.join(60)
        assert [status for status, _ in results] == [200, 200, 200]
        assert admission.stats.released_starved == 1
        # The trainer has its batch: the window holds again.
        served.service.trainer_waiting(False)
        again = _request(served.url, results)
        wait_for(lambda: admission.stats.held_requests == 2, "the next request to be held again")
        served.service.trainer_waiting(True)
        again.join(60)
        assert admission.stats.released_starved == 2


def test_a_held_request_goes_on_after_the_longest_hold_without_an_error(tiny_model_dir):
    admission = _admission(max_hold_s=0.3)
    with serving(tiny_model_dir, admission=admission) as served:
        results = []
        for _ in range(3):
            _request(served.url, results).join(60)
        assert [status for status, _ in results] == [200, 200, 200]
        assert admission.stats.held_requests == 1 and admission.stats.released_max_hold == 1


def test_a_request_that_fails_leaves_the_window(tiny_model_dir):
    admission = _admission()
    with serving(tiny_model_dir, admission=admission) as served:
        answer = requests.post(f"{served.url}/generate", json={"prompt": {"prompt_token_ids": list(range(100, 600))},
                                                               "n": 4, "max_tokens": 4}, timeout=60)
        assert answer.status_code == 400 and "no room" in answer.json()["error"]["message"]
        assert admission.outstanding() == 0


def test_admission_control_that_cannot_take_effect_stops_the_run():
    def settings(**overrides):
        return InferenceConfig.from_mapping({"admission_control": True, **overrides})

    check_admission_control(settings(), max_policy_lag=2)
    check_admission_control(InferenceConfig.from_mapping({}), max_policy_lag=None)  # off: nothing to check
    with pytest.raises(ValueError, match=r"trainer\.atropos\.max_policy_lag"):
        check_admission_control(settings(), max_policy_lag=None)
    with pytest.raises(ValueError, match=r"trainer\.atropos_inference\.weight_sync"):
        check_admission_control(settings(weight_sync=False), max_policy_lag=None)
    with pytest.raises(ValueError, match=r"trainer\.atropos_inference\.enable"):
        check_admission_control(settings(enable=False), max_policy_lag=2)
    with pytest.raises(ValueError, match=r"trainer\.atropos_inference\.admission_starved_grace_s"):
        settings(admission_starved_grace_s=0)
    with pytest.raises(ValueError, match=r"trainer\.atropos_inference\.admission_shares"):
        settings(admission_shares={"fast": 0.7, "slow": 0})
