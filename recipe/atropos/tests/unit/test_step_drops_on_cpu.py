"""A step's dropped groups as metrics and as the line a stop names them with: by reason, by
environment name (a restarted environment's new env_id adds to its name's count)."""

from recipe.atropos.source.step_drops import STALE, StepDrops


def test_drops_are_counted_by_reason_and_by_environment_name():
    drops = StepDrops()
    drops.add("invalid_prompt_too_long", 0, 2)
    drops.add("invalid_prompt_too_long", 3)  # gsm8k again, restarted under env_id 3
    drops.add(STALE, 1)
    names = {0: "gsm8k", 1: "math", 3: "gsm8k"}
    assert drops.metrics(names) == {
        "atropos/dropped_groups": 4.0,
        "atropos/dropped_groups/invalid_prompt_too_long": 3.0,
        "atropos/dropped_groups/invalid_prompt_too_long/gsm8k": 3.0,
        "atropos/dropped_groups/stale": 1.0,
        "atropos/dropped_groups/stale/math": 1.0,
    }
    assert drops.describe(names) == "invalid_prompt_too_long: 3 (gsm8k 3); stale: 1 (math 1)"
    assert StepDrops().describe() == "no group was dropped"
