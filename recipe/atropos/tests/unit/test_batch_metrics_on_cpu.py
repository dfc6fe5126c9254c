"""atropos_batch_metrics: per-environment share, training reward and no-signal rate by name."""

import numpy as np
import pytest

from recipe.atropos.data.batch_metrics import atropos_batch_metrics
from recipe.atropos.data.scored_group import AtroposBatch, validate_group
from recipe.atropos.data.to_dataproto import scored_data_to_dataproto
from recipe.atropos.tests.helpers.scored_data_factory import make_group


def test_per_environment_metrics_by_name():
    rng = np.random.default_rng(0)
    # env 0 ("math"): one mixed group and one all-right group; env 1 ("gsm8k"): one all-wrong group.
    scored = [(0, [1.0, 0.0, 0.0, 1.0]), (0, [1.0, 1.0, 1.0, 1.0]), (1, [0.0, 0.0, 0.0, 0.0])]
    raw = []
    for env_id, scores in scored:
        group = make_group(rng, group_size=len(scores), env_id=env_id)
        group["scores"] = scores
        raw.append(group)
    groups = [validate_group(group, index) for index, group in enumerate(raw)]
    data = scored_data_to_dataproto(groups, pad_token_id=0, max_prompt_length=16, max_response_length=16)
    metrics = atropos_batch_metrics(AtroposBatch(groups, [], received_groups=3), data, {0: "math", 1: "gsm8k"})

    assert metrics["atropos/env_share/math"] == pytest.approx(8 / 12)
    assert metrics["atropos/env_share/gsm8k"] == pytest.approx(4 / 12)
    assert metrics["atropos/env_mean_score/math"] == pytest.approx(6 / 8)
    assert metrics["atropos/env_mean_score/gsm8k"] == 0.0
    assert metrics["atropos/env_identical_score_rate/math"] == pytest.approx(0.5)
    assert metrics["atropos/env_identical_score_rate/gsm8k"] == 1.0
    assert metrics["atropos/identical_score_rate"] == pytest.approx(2 / 3)
