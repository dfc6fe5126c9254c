"""The math environment's presets and held-out split: held-out problems are never served for
training, whatever the seeds, and the held-out parquet is scored by the environment's own rule
through verl's custom reward function signature; the sampled reward read from an environment's
scores log, by fifths and by problem."""

import json
import math
import statistics

import pandas as pd
import pytest

from recipe.atropos.envs.answer_scoring import compute_score
from recipe.atropos.envs.math_env import MathEnvConfig, heldout_items, is_heldout, math_items
from recipe.atropos.examples.demo_math import (
    HELDOUT_SOURCE,
    PRESET,
    repeated_item_summary,
    sampled_groups,
    sampled_reward_summary,
    write_heldout_parquet,
)


def test_heldout_problems_are_never_training_problems_whatever_the_seeds():
    training = {item.prompt for seed in (0, 1, 2) for item in math_items(600, seed, PRESET, heldout_share=0.2)}
    heldout = heldout_items(100, 1234, PRESET, heldout_share=0.2)
    assert len({item.prompt for item in heldout}) == 100  # distinct
    assert training.isdisjoint(item.prompt for item in heldout)
    # The split is a share of the problem space, not an empty one: about 20% of generated problems.
    everything = math_items(1000, 5, PRESET)
    share = sum(is_heldout(item.prompt, 0.2) for item in everything) / len(everything)
    assert 0.12 < share < 0.28, share


def test_the_two_digit_preset_gives_sums_and_differences_of_small_operands():
    items = math_items(50, 0, PRESET)
    assert len(items) == 50
    for item in items:
        left, operator, right = item.prompt.removeprefix("Calculate ").rstrip(".").split(" ")
        assert operator in "+-" and 0 <= int(left) < 100 and 0 <= int(right) < 100
        assert int(item.reference) == (int(left) + int(right) if operator == "+" else int(left) - int(right))


def test_an_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown preset 'hard'"):
        math_items(4, 0, "hard")
    assert MathEnvConfig(preset="mixed").heldout_share == 0.0


def test_heldout_parquet_is_verls_rl_format_and_scored_by_the_environments_rule(tmp_path):
    frame = pd.read_parquet(write_heldout_parquet(tmp_path / "heldout.parquet", 16))
    assert len(frame) == 16 and set(frame["data_source"]) == {HELDOUT_SOURCE}
    row = frame.iloc[0]
    messages = list(row["prompt"])
    assert [m["role"] for m in messages] == ["system", "user"] and "\\boxed" in messages[0]["content"]
    truth = row["reward_model"]["ground_truth"]
    assert compute_score(HELDOUT_SOURCE, f"so it is \\boxed{{{truth}}}", truth) == 1.0
    assert compute_score(HELDOUT_SOURCE, f"\\boxed{{{int(truth) + 1}}}", truth) == 0.0


def test_sampled_reward_compares_the_first_and_last_fifth_of_the_logged_groups(tmp_path):
    log = tmp_path / "scores_math.jsonl"
    groups = [[0.0] * 6] * 4 + [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]] * 12 + [[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]] * 4
    log.write_text("".join(json.dumps({"time": float(i), "item": f"p{i}", "scores": scores}) + "\n"
                           for i, scores in enumerate(groups)))
    logged = sampled_groups(log)
    assert [key for key, _ in logged] == [f"p{i}" for i in range(20)]
    rewards = [reward for _, reward in logged]
    assert rewards == pytest.approx([sum(scores) / 6 for scores in groups])
    summary = sampled_reward_summary(rewards)
    assert (summary["groups"], summary["window_groups"]) == (20, 4)
    assert summary["first_mean"] == 0.0 and summary["last_mean"] == pytest.approx(0.5)
    assert summary["improvement_standard_errors"] == math.inf  # both windows constant, the last higher
    assert sampled_groups(tmp_path / "absent.jsonl") == []
    assert math.isnan(sampled_reward_summary(rewards[:9])["improvement_standard_errors"])


def test_a_problem_served_again_is_compared_with_its_own_first_score():
    # "easy" is always solved, "hard" never: the fifths see their spread; pairing takes it out.
    groups = [("easy", 1.0), ("hard", 0.0), ("a", 0.0), ("b", 0.5), ("c", 0.5), ("once", 1.0),
              ("easy", 1.0), ("hard", 0.0), ("a", 0.5), ("b", 0.5), ("c", 1.0), ("a", 1.0), (None, 1.0)]
    summary = repeated_item_summary(groups)
    assert (summary["items"], summary["repeated_items"]) == (6, 5)  # "once" and the keyless group are not paired
    # last minus first: easy 0, hard 0, a +1 (its middle score is skipped), b 0, c +0.5
    assert summary["mean_change"] == pytest.approx(0.3)
    assert summary["first_mean"] == pytest.approx(2.0 / 5) and summary["last_mean"] == pytest.approx(3.5 / 5)
    standard_error = statistics.stdev([0, 0, 1, 0, 0.5]) / math.sqrt(5)
    assert summary["improvement_standard_errors"] == pytest.approx(0.3 / standard_error)
    assert math.isnan(repeated_item_summary([("a", 0.0), ("a", 1.0), ("b", 0.0)])["improvement_standard_errors"])
