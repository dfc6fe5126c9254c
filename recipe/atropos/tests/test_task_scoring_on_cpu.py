"""Scoring of the shipped environments: final-answer extraction and the code sandbox's limits."""

import asyncio
import time

import pytest

from recipe.atropos.envs.answer_scoring import extract_final_answer, score_answer
from recipe.atropos.envs.code_env import extract_code
from recipe.atropos.envs.code_sandbox import SandboxLimits, run_tests
from recipe.atropos.envs.code_tasks import CODE_TASKS
from recipe.atropos.envs.gsm8k_env import gsm_symbolic_items
from recipe.atropos.envs.math_env import math_items


@pytest.mark.parametrize("text, expected", [
    ("so the total is 1,234 apples.\n#### 1,234", "1234"),
    ("The answer is \\boxed{-7}. (not 3)", "-7"),
    ("First 3 then 4, finally 12.", "12"),
    ("#### $18.50", "18.50"),
    ("no number here", None),
])
def test_final_answer_extraction(text, expected):
    assert extract_final_answer(text) == expected


def test_numeric_scoring():
    assert score_answer("... #### 42", "42") == 1.0
    assert score_answer("... #### 42.0", "42") == 1.0
    assert score_answer("... #### 41", "42") == 0.0
    assert score_answer("I don't know", "42") == 0.0


def test_task_generators_are_seeded_and_answerable():
    gsm = gsm_symbolic_items(4, seed=3)
    assert [i.prompt for i in gsm] == [i.prompt for i in gsm_symbolic_items(4, seed=3)]
    assert all(extract_final_answer(i.reference) is not None for i in gsm)
    maths = math_items(9, seed=0)
    assert len(maths) == 9 and all(score_answer(f"#### {i.reference}", i.reference) == 1.0 for i in maths)


def run(code, tests, **limits):
    return asyncio.run(run_tests(code, tests, SandboxLimits(**limits)))


def test_sandbox_counts_passing_tests_and_reference_solutions_pass():
    assert run("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"]).passed == 1
    solutions = {"add": "def add(a, b): return a + b", "gcd": "import math\ndef gcd(a, b): return math.gcd(a, b)"}
    for name, _, tests in CODE_TASKS:
        if name in solutions:
            result = run(solutions[name], list(tests))
            assert (result.passed, result.total) == (len(tests), len(tests))


def test_sandbox_bounds_bad_candidates():
    started = time.monotonic()
    looping = run("while True:\n    pass", ["assert True"], timeout_s=1.0)
    assert looping.timed_out and looping.passed == 0 and time.monotonic() - started < 5
    hog = run("x = bytearray(2 * 1024**3)", ["assert True"], memory_bytes=256 * 1024**2)
    assert hog.passed == 0 and not hog.timed_out
    broken = run("def f(:", ["assert f()"])
    assert broken.passed == 0


def test_code_extraction_takes_the_last_fenced_block():
    answer = "Try:\n```python\ndef f(): return 1\n```\nBetter:\n```python\ndef f(): return 2\n```"
    assert extract_code(answer).strip() == "def f(): return 2"
    assert extract_code("def f(): return 3") == "def f(): return 3"
