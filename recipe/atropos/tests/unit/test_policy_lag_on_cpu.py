"""Policy versions of what environments post: multi-turn completions made of several served pieces
are found, text re-tokenised by the environment is found, unknown versions are reported per
environment and, when asked, dropped."""

import numpy as np
import pytest
import requests

from recipe.atropos.data.trajectory_api_client import AtroposEnvironmentClient
from recipe.atropos.data.client_config import AtroposClientConfig
from recipe.atropos.source.policy_lag import filter_stale_groups, group_version
from recipe.atropos.source.policy_versions import PolicyVersionRegistry

CLIENT = AtroposEnvironmentClient({"api_url": "http://127.0.0.1:1"})


def group_of(rows, env_id=0):
    """rows: lists of (tokens, is_completion) runs per sequence."""
    tokens, masks = [], []
    for runs in rows:
        seq, mask = [], []
        for run, completion in runs:
            seq += run
            mask += run if completion else [-100] * len(run)
        tokens.append(seq)
        masks.append(mask)
    (group,) = CLIENT.validate_batch([{"tokens": tokens, "masks": masks, "scores": [0.0] * len(rows),
                                       "env_id": env_id}]).groups
    return group


PROMPT, TOOL_OUTPUT = [1, 2, 3], [900, 901]
TURN_1, TURN_2, TURN_3 = [10, 11, 12], [20, 21], [30, 31, 32, 33]


def registry_with_turns():
    registry = PolicyVersionRegistry()
    registry.record(TURN_1, 2)
    registry.record(TURN_2, 4)
    registry.record(TURN_3, 3)
    return registry


def test_a_multi_turn_completion_with_tool_output_between_served_turns_has_the_oldest_version():
    group = group_of([[(PROMPT, False), (TURN_1, True), (TOOL_OUTPUT, False), (TURN_2, True)],
                      [(PROMPT, False), (TURN_3, True)]])
    assert group_version(group, registry_with_turns()) == 2


def test_served_turns_joined_back_to_back_are_found():
    group = group_of([[(PROMPT, False), (TURN_3 + TURN_2 + TURN_1, True)]])
    assert group_version(group, registry_with_turns()) == 2
    unserved = group_of([[(PROMPT, False), (TURN_2 + [77], True)]])  # a token nobody served
    assert group_version(unserved, registry_with_turns()) is None


def test_unknown_versions_are_reported_per_environment_and_dropped_only_when_asked():
    served = group_of([[(PROMPT, False), (TURN_1, True)]], env_id=0)
    foreign = group_of([[(PROMPT, False), ([55, 56], True)]], env_id=1)
    registry = registry_with_turns()
    kept = filter_stale_groups([served, foreign], registry, completed_updates=3, max_policy_lag=5,
                               env_names={0: "math", 1: "tools"})
    assert [g.uid for g in kept.kept] == [served.uid, foreign.uid] and not kept.stale
    assert kept.metrics["atropos/policy_version_unknown_share/tools"] == 1.0
    assert kept.metrics["atropos/policy_version_unknown_share/math"] == 0.0
    dropped = filter_stale_groups([served, foreign], registry, completed_updates=3, max_policy_lag=5,
                                  drop_unknown=True)
    assert [g.uid for g in dropped.kept] == [served.uid] and [g.uid for g in dropped.unknown] == [foreign.uid]


def test_dropping_unknown_versions_without_a_lag_bound_is_refused():
    with pytest.raises(ValueError, match="drop_unknown_version_groups=true needs trainer.atropos.max_policy_lag"):
        AtroposClientConfig.from_mapping({"drop_unknown_version_groups": True})


def test_chat_text_re_tokenised_by_the_environment_is_found(policy_server):
    from transformers import AutoTokenizer

    policy_server.proxy.policy_version = 6
    policy_server.server.set_global_steps(6)  # the replica reports the version of its weights too
    answer = requests.post(f"{policy_server.url}/v1/chat/completions", timeout=120, json={
        "model": "policy", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 12, "n": 2,
        "temperature": 1.0})
    assert answer.status_code == 200, answer.text
    tokenizer = AutoTokenizer.from_pretrained(policy_server.model_dir)
    for choice in answer.json()["choices"]:
        retokenised = tokenizer.encode(choice["message"]["content"], add_special_tokens=False)
        if retokenised:
            assert policy_server.proxy.registry.lookup_pieces(np.asarray(retokenised)) == 6


def test_an_answer_served_again_later_keeps_the_lag_of_its_first_serving():
    """A short answer ("12") served at version 1 and again at version 6: a group posting it may hold the
    first serving, so at 6 updates done its lag is 5 (not 0) and max_policy_lag=2 drops it."""
    short_answer = [16, 17]
    registry = PolicyVersionRegistry()
    registry.record(short_answer, 1)
    registry.record(short_answer, 6)
    group = group_of([[(PROMPT, False), (short_answer, True)]])
    assert group_version(group, registry) == 1
    lag = filter_stale_groups([group], registry, completed_updates=6, max_policy_lag=2)
    assert lag.metrics["atropos/policy_lag_max"] == 5 and [g.uid for g in lag.stale] == [group.uid]
