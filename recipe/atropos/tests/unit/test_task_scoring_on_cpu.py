"""Scoring of the shipped environments: final-answer extraction, and code judged outside the
candidate's process (forgeries score 0, solutions 1) within the sandbox's limits."""

import asyncio

import pytest

from recipe.atropos.envs.answer_scoring import extract_final_answer, score_answer
from recipe.atropos.envs.code.code_env import extract_code, score_code
from recipe.atropos.envs.code.sandbox import SandboxLimits, run_function
from recipe.atropos.envs.code.tasks import CODE_TASKS
from recipe.atropos.envs.gsm8k_env import gsm_symbolic_items
from recipe.atropos.envs.math_env import math_items


@pytest.mark.parametrize("text, expected", [
    ("so the total is 1,234 apples.\n#### 1,234", "1234"),
    ("The answer is \\boxed{-7}. (not 3)", "-7"),
    ("First 3 then 4, finally 12.", "12"),
    ("#### $18.50", "18.50"),
    ("no number here", None),
    ("hence \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),  # nested braces
])
def test_final_answer_extraction(text, expected):
    assert extract_final_answer(text) == expected


def test_numeric_scoring():
    assert score_answer("... #### 42", "42") == 1.0
    assert score_answer("... #### 42.0", "42") == 1.0
    assert score_answer("... #### 41", "42") == 0.0
    assert score_answer("I don't know", "42") == 0.0


def test_answers_beyond_plain_numbers_are_graded_by_value():
    assert score_answer("so \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert score_answer("\\boxed{1/2}", "\\frac{1}{2}") == 1.0
    assert score_answer("\\boxed{2\\sqrt{2}}", "\\sqrt{8}") == 1.0
    assert score_answer("\\boxed{\\frac{1}{3}}", "0.5") == 0.0
    assert score_answer("\\boxed{__import__('os').system('true')}", "0") == 0.0  # not evaluated: too many letters


def test_task_generators_are_seeded_and_answerable():
    gsm = gsm_symbolic_items(4, seed=3)
    assert [i.prompt for i in gsm] == [i.prompt for i in gsm_symbolic_items(4, seed=3)]
    assert all(extract_final_answer(i.reference) is not None for i in gsm)
    maths = math_items(9, seed=0)
    assert len(maths) == 9 and all(score_answer(f"#### {i.reference}", i.reference) == 1.0 for i in maths)


def run(code, function, cases, **limits):
    inputs, expected = [list(args) for args, _ in cases], [want for _, want in cases]
    return asyncio.run(run_function(code, function, inputs, expected, SandboxLimits(**limits)))


def score(answer, task="add"):
    return asyncio.run(score_code(answer, task))


SOLUTIONS = {
    "add": "def add(a, b): return a + b",
    "gcd": "import math\ndef gcd(a, b): return math.gcd(a, b)",
    "is_even": "def is_even(n):\n    return n % 2 == 0",
    "unique_sorted": "def unique_sorted(xs): return sorted(set(xs))",
}


def test_sandbox_counts_correct_results_and_reference_solutions_score_one():
    assert run("def add(a, b):\n    return a + b", "add", [((1, 2), 3), ((1, 1), 3)]).passed == 1
    for task in CODE_TASKS:
        if task.name in SOLUTIONS:
            assert score(f"```python\n{SOLUTIONS[task.name]}\n```", task.name) == 1.0, task.name
    assert score("def add(a, b): return a - b") == 0.0
    assert score("def is_even(n): return int(n % 2 == 0)", "is_even") == 0.0  # 1 is not True


# Each tries to score 1 on `add` without computing a sum. None may.
FORGERIES = {
    "fake_result_line_then_os_exit": "import os\nprint('PASSED 3/3')\nos._exit(0)",
    "fake_answer_on_stdout_then_exit": 'import os, sys\nsys.__stdout__.write(\'{"outputs": [{"value": 5}]}\\n\')\n'
                                      "sys.__stdout__.flush()\nos._exit(0)",
    "system_exit_at_import": "raise SystemExit(0)",
    "system_exit_when_called": "def add(a, b):\n    raise SystemExit(0)",
    "rebinding_builtins": "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.AssertionError = type("
                          "'Never', (Exception,), {})\nbuiltins.isinstance = lambda *a: True\ndef add(a, b): return 0",
    "equal_to_anything": "class Anything:\n    __eq__ = lambda self, other: True\n    __ne__ = lambda self, other: "
                         "False\n    __hash__ = object.__hash__\ndef add(a, b): return Anything()",
    "int_equal_to_anything": "class Sly(int):\n    __eq__ = lambda self, other: True\ndef add(a, b): return Sly(0)",
    "patched_json_encoder": "import json\njson.dumps = lambda *a, **k: '{\"outputs\": [{\"value\": 5}, "
                            "{\"value\": 0}, {\"value\": 0.75}]}'\ndef add(a, b): return None",
    "writing_to_the_channel_early": (
        "import os\nfor fd in range(1, 20):\n    for line in (b'PASSED 3/3\\n', b'{\"passed\": 3, \"total\": 3}\\n',"
        " b'{\"outputs\": [{\"value\": true}, {\"value\": true}, {\"value\": true}]}\\n'):\n"
        "        try:\n            os.write(fd, line)\n        except OSError:\n            pass\n"
        "def add(a, b): return 0"),
    "flooding_the_channel": "import os\nos.write(3, b'x' * (4 * 1024**2))\ndef add(a, b): return a + b",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_verdicts_score_zero(name):
    assert score(f"```python\n{FORGERIES[name]}\n```") == 0.0


def test_sandbox_bounds_bad_candidates():
    looping = run("def add(a, b):\n    while True:\n        pass", "add", [((1, 2), 3)], timeout_s=1.0)
    assert looping.timed_out and looping.passed == 0
    hog = run("x = bytearray(2 * 1024**3)\ndef add(a, b): return a + b", "add", [((1, 2), 3)],
              memory_bytes=256 * 1024**2)
    assert hog.passed == 0 and not hog.timed_out
    broken = run("def add(:", "add", [((1, 2), 3)])
    assert broken.passed == 0


def test_code_extraction_takes_the_last_fenced_block():
    answer = "Try:\n```python\ndef f(): return 1\n```\nBetter:\n```python\ndef f(): return 2\n```"
    assert extract_code(answer).strip() == "def f(): return 2"
    assert extract_code("def f(): return 3") == "def f(): return 3"
