"""Final-answer extraction and numeric scoring for the GSM8K and math environments.

The answer a completion gives is, in order of preference: the last `\\boxed{...}`, the number after
the last `####` (GSM8K's own convention), or the last number in the text. It is correct when it
equals the reference numerically (commas, `$` and a trailing `.` are ignored).
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _clean(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip().rstrip(".")


def extract_final_answer(text: str) -> str | None:
    """The answer a completion commits to, or None when it gives no number."""
    boxed = _BOXED.findall(text)
    if boxed:
        return _clean(boxed[-1])
    if "####" in text:
        numbers = _NUMBER.findall(text.rsplit("####", 1)[1])
        if numbers:
            return _clean(numbers[0])
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def numeric_match(prediction: str | None, reference: str) -> bool:
    if prediction is None:
        return False
    try:
        return abs(float(_clean(prediction)) - float(_clean(reference))) < 1e-6
    except ValueError:
        return _clean(prediction) == _clean(reference)


def score_answer(completion: str, reference: str) -> float:
    """1.0 when the completion's final answer equals `reference`, else 0.0."""
    return 1.0 if numeric_match(extract_final_answer(completion), reference) else 0.0


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None,
                  **kwargs: object) -> float:
    """verl's custom reward function signature (`reward.custom_reward_function.path` = this file): the
    environments' own rule, so verl's validation scores held-out problems as the environment scores
    training ones. It reads the answer from the text only; nothing of the completion is run."""
    return score_answer(solution_str, str(ground_truth))
