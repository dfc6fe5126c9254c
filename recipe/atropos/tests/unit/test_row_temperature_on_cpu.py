"""Each row's sampling temperature: read from the group by precedence, carried through the journal
and the conversion, and delivered to verl's workers per row even though verl's `_update_actor`
writes the rollout default into meta_info."""

import numpy as np
import pytest
import torch

from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.source.batch_journal import BatchJournal
from recipe.atropos.data.row_temperature import RowTemperatureBatch
from recipe.atropos.data.scored_group import validate_group
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def group(seed, size, **fields):
    return {**make_group(np.random.default_rng(seed), group_size=size, with_logprobs=True), **fields}


def converted(raws, default_temperature):
    groups = [validate_group(raw, index) for index, raw in enumerate(raws)]
    return scored_data_to_dataproto(groups, pad_token_id=0, max_prompt_length=16, max_response_length=16,
                                    default_temperature=default_temperature)


def test_precedence_row_override_then_generation_params_then_group_overrides_then_the_rollout_default():
    raws = [
        group(0, 3, overrides=[{"temperature": 0.5}, {}, None], generation_params={"temperature": 0.7},
              group_overrides={"temperature": 0.9}),
        group(1, 2, group_overrides={"temperature": 0.9}),
        group(2, 2, generation_params={"max_tokens": 8}),  # says nothing about temperature
    ]
    data = converted(raws, default_temperature=1.3)
    assert data.batch["temperature"].tolist() == pytest.approx([0.5, 0.7, 0.7, 0.9, 0.9, 1.3, 1.3])
    assert data.batch["temperature"].dtype == torch.float32
    assert data.meta_info["atropos_rows_at_default_temperature"] == 2


def test_the_journal_keeps_what_the_temperature_came_from(tmp_path):
    raw = group(3, 2, overrides=[None, {"temperature": 1.1}], generation_params={"temperature": 0.7, "top_p": 0.9})
    journal = BatchJournal(tmp_path)
    journal.record(1, [validate_group(raw, 0).to_scored_data()])
    again = validate_group(journal.load(1)[0], 0)
    assert again.generation_params == {"temperature": 0.7, "top_p": 0.9}
    np.testing.assert_array_equal(again.temperatures, [0.7, 1.1])


def batch_as_verl_update_actor_leaves_it(temperatures):
    raws = [group(4, len(temperatures), overrides=[{"temperature": t} for t in temperatures])]
    data = converted(raws, default_temperature=1.0)
    data.meta_info["temperature"] = 1.0  # what RayPPOTrainer._update_actor writes before to_tensordict
    return data


def test_verl_refuses_a_temperature_column_beside_its_meta_temperature():
    """Why the view exists: verl's own conversion fails on the batch `_update_actor` builds."""
    with pytest.raises(AssertionError):
        batch_as_verl_update_actor_leaves_it([0.7, 1.3]).to_tensordict()


def test_mixed_temperatures_reach_the_workers_per_row():
    data = batch_as_verl_update_actor_leaves_it([0.7, 1.3])
    td = RowTemperatureBatch.view(data).to_tensordict()
    assert isinstance(td["temperature"], torch.Tensor)
    assert td["temperature"].tolist() == pytest.approx([0.7, 1.3])
    torch.testing.assert_close(td["input_ids"], data.batch["input_ids"])


def test_one_shared_temperature_travels_as_the_scalar_verls_fused_kernels_need():
    data = batch_as_verl_update_actor_leaves_it([0.7, 0.7])
    td = RowTemperatureBatch.view(data).to_tensordict()
    # what verl's engine reads as `micro_batch["temperature"]`: a float, not a tensor
    assert not isinstance(td["temperature"], torch.Tensor)
    assert td["temperature"] == pytest.approx(0.7)
    assert data.meta_info["temperature"] == 1.0  # the caller's batch is left as verl wrote it


def test_a_batch_without_the_column_is_verls_own():
    data = converted([group(5, 2)], default_temperature=1.0)
    data.batch.pop("temperature")
    assert RowTemperatureBatch.view(data) is data
