"""Final-answer extraction and scoring for the GSM8K and math environments.

The answer a completion gives is, in order of preference: the last `\\boxed{...}` (nested braces
too, read by mathruler, which verl already installs), the number after the last `####` (GSM8K's own
convention), or the last number in the text. It is correct when it equals the reference numerically
(commas, `$` and a trailing `.` are ignored), or, for answers that are not plain numbers
(`\\frac{1}{2}`, `1/2`, `2\\sqrt{2}`), when mathruler's grader finds them equal. Its grader parses an
answer with sympy only when the answer holds at most two unknown letters and no large powers (its own
guards against arbitrary text); answers longer than `MAX_SYMBOLIC_CHARS` are not parsed at all.
"""

from __future__ import annotations

import re

from mathruler.grader import extract_boxed_content, grade_answer

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
MAX_SYMBOLIC_CHARS = 64


def _clean(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip().rstrip(".")


def extract_final_answer(text: str) -> str | None:
    """The answer a completion commits to, or None when it gives no number."""
    boxed = extract_boxed_content(text)  # the last \\boxed{...}; "None" when there is none
    if boxed != "None":
        return _clean(boxed)
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
        if _clean(prediction) == _clean(reference):
            return True
        return len(prediction) <= MAX_SYMBOLIC_CHARS and grade_answer(prediction, reference)


def score_answer(completion: str, reference: str) -> float:
    """1.0 when the completion's final answer equals `reference`, else 0.0."""
    return 1.0 if numeric_match(extract_final_answer(completion), reference) else 0.0


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None,
                  **kwargs: object) -> float:
    """verl's custom reward function signature (`reward.custom_reward_function.path` = this file): the
    environments' own rule, so verl's validation scores held-out problems as the environment scores
    training ones. It reads the answer from the text; only mathruler's guarded sympy parse (short answers,
at most two unknown letters) evaluates any of it."""
    return score_answer(solution_str, str(ground_truth))
