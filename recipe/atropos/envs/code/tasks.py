"""Small programming tasks for the `code` environment: a function to write, the inputs it is called
with, and the results expected. Expected results stay in the scoring process: the candidate's
process gets the inputs only (sandbox.py)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class CodeTask:
    name: str
    prompt: str
    function: str
    cases: tuple[tuple[tuple[Any, ...], Any], ...]  # (arguments, expected result), JSON values only

    @property
    def inputs(self) -> list[list[Any]]:
        return [list(args) for args, _ in self.cases]

    @property
    def expected(self) -> list[Any]:
        return [result for _, result in self.cases]


CODE_TASKS: tuple[CodeTask, ...] = (
    CodeTask("add", "Write a Python function `add(a, b)` that returns the sum of two numbers.", "add",
             (((2, 3), 5), ((-1, 1), 0), ((0.5, 0.25), 0.75))),
    CodeTask("reverse_string", "Write a Python function `reverse_string(s)` that returns the string reversed.",
             "reverse_string", ((("abc",), "cba"), (("",), ""), (("a",), "a"))),
    CodeTask("is_even", "Write a Python function `is_even(n)` that returns True when the integer n is even.",
             "is_even", (((4,), True), ((7,), False), ((0,), True))),
    CodeTask("factorial", "Write a Python function `factorial(n)` that returns n! for a non-negative integer n.",
             "factorial", (((0,), 1), ((5,), 120), ((10,), 3628800))),
    CodeTask("max_of_list", "Write a Python function `max_of_list(xs)` that returns the largest element of a "
             "non-empty list.", "max_of_list", ((([1, 5, 3],), 5), (([-2, -7],), -2), (([4],), 4))),
    CodeTask("count_vowels", "Write a Python function `count_vowels(s)` that returns how many of the letters a, e, "
             "i, o, u (either case) are in s.", "count_vowels", ((("hello",), 2), (("xyz",), 0), (("AEIOU",), 5))),
    CodeTask("fibonacci", "Write a Python function `fibonacci(n)` returning the n-th Fibonacci number, "
             "fibonacci(0) == 0, fibonacci(1) == 1.", "fibonacci", (((0,), 0), ((1,), 1), ((10,), 55))),
    CodeTask("is_palindrome", "Write a Python function `is_palindrome(s)` that returns True when s reads the same "
             "backwards.", "is_palindrome", ((("racecar",), True), (("ab",), False), (("",), True))),
    CodeTask("sum_of_squares", "Write a Python function `sum_of_squares(n)` returning 1*1 + 2*2 + ... + n*n.",
             "sum_of_squares", (((1,), 1), ((3,), 14), ((0,), 0))),
    CodeTask("unique_sorted", "Write a Python function `unique_sorted(xs)` returning the distinct elements of xs "
             "in ascending order as a list.", "unique_sorted",
             ((([3, 1, 3, 2],), [1, 2, 3]), (([],), []), (([5, 5],), [5]))),
    CodeTask("gcd", "Write a Python function `gcd(a, b)` returning the greatest common divisor of two positive "
             "integers.", "gcd", (((12, 18), 6), ((7, 13), 1), ((10, 10), 10))),
    CodeTask("word_count", "Write a Python function `word_count(s)` returning the number of whitespace-separated "
             "words in s.", "word_count", ((("a b  c",), 3), (("",), 0), (("one",), 1))),
)
TASKS_BY_NAME = {task.name: task for task in CODE_TASKS}
