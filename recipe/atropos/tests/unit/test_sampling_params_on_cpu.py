"""Sampling parameters that verl's log-prob recomputation does not apply (top_p < 1, top_k > 0,
min_p > 0), stated by groups that pass through the real run-api: the rows they cover are counted in
`atropos/rows_with_truncated_sampling`, and the trainer says so once per environment; the samplers'
"off" values (1.0, -1, 0) count nothing."""

import logging

import numpy as np

from recipe.atropos.data.batch_metrics import atropos_batch_metrics
from recipe.atropos.data.field_notices import OncePerEnvironment
from recipe.atropos.data.sampling_params import truncating_parameters
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.examples.env_api import post_groups, register_env
from recipe.atropos.tests.helpers.api_helpers import GROUP, started_trainer
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def test_truncated_sampling_is_counted_and_said_once_per_environment(run_api, caplog):
    client = started_trainer(run_api.url, batch_size=3 * GROUP)
    env_id = register_env(run_api.url, name="sampler", weight=1.0, group_size=GROUP, max_token_length=64)
    rng = np.random.default_rng(0)
    group_wide, per_row, off = (make_group(rng, group_size=GROUP, prompt_len=(2, 4), response_len=(2, 4))
                                for _ in range(3))
    group_wide["generation_params"] = {"temperature": 0.8, "top_p": 0.9}
    per_row["overrides"] = [{"top_k": 20}, {}, {}, {"top_k": 20, "min_p": 0.05}]
    off["generation_params"] = {"top_p": 1.0, "top_k": -1, "min_p": 0.0}
    post_groups(run_api.url, [group_wide, per_row, off], env_id=env_id)
    batch = client.poll_batch()
    assert batch is not None and len(batch.groups) == 3

    found = {tuple(sorted(truncating_parameters(g)[0])): truncating_parameters(g)[1] for g in batch.groups}
    assert found == {("top_p",): GROUP, ("min_p", "top_k"): 2, (): 0}
    data = scored_data_to_dataproto(batch.groups, pad_token_id=0, max_prompt_length=8, max_response_length=8)
    assert atropos_batch_metrics(batch, data)["atropos/rows_with_truncated_sampling"] == GROUP + 2

    notices = OncePerEnvironment()
    with caplog.at_level(logging.WARNING):
        said = [notices.say("sampler", "truncated_sampling", f"samples with {truncating_parameters(g)[0]}")
                for g in batch.groups if truncating_parameters(g)[0]]
    assert said == [True, False]  # the second group of the same environment is not said again
    (record,) = caplog.records
    assert record.getMessage().startswith("environment sampler: samples with {")
