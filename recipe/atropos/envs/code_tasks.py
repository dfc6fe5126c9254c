"""Small programming tasks for the `code` environment: a function to write and tests for it."""

from __future__ import annotations

CODE_TASKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("add", "Write a Python function `add(a, b)` that returns the sum of two numbers.",
     ("assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(0.5, 0.25) == 0.75")),
    ("reverse_string", "Write a Python function `reverse_string(s)` that returns the string reversed.",
     ("assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''", "assert reverse_string('a') == 'a'")),
    ("is_even", "Write a Python function `is_even(n)` that returns True when the integer n is even.",
     ("assert is_even(4) is True", "assert is_even(7) is False", "assert is_even(0) is True")),
    ("factorial", "Write a Python function `factorial(n)` that returns n! for a non-negative integer n.",
     ("assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(10) == 3628800")),
    ("max_of_list", "Write a Python function `max_of_list(xs)` that returns the largest element of a non-empty list.",
     ("assert max_of_list([1, 5, 3]) == 5", "assert max_of_list([-2, -7]) == -2", "assert max_of_list([4]) == 4")),
    ("count_vowels", "Write a Python function `count_vowels(s)` that returns how many of the letters a, e, i, o, u "
     "(either case) are in s.",
     ("assert count_vowels('hello') == 2", "assert count_vowels('xyz') == 0", "assert count_vowels('AEIOU') == 5")),
    ("fibonacci", "Write a Python function `fibonacci(n)` returning the n-th Fibonacci number, fibonacci(0) == 0, "
     "fibonacci(1) == 1.",
     ("assert fibonacci(0) == 0", "assert fibonacci(1) == 1", "assert fibonacci(10) == 55")),
    ("is_palindrome", "Write a Python function `is_palindrome(s)` that returns True when s reads the same backwards.",
     ("assert is_palindrome('racecar') is True", "assert is_palindrome('ab') is False", "assert is_palindrome('') is True")),
    ("sum_of_squares", "Write a Python function `sum_of_squares(n)` returning 1*1 + 2*2 + ... + n*n.",
     ("assert sum_of_squares(1) == 1", "assert sum_of_squares(3) == 14", "assert sum_of_squares(0) == 0")),
    ("unique_sorted", "Write a Python function `unique_sorted(xs)` returning the distinct elements of xs in "
     "ascending order as a list.",
     ("assert unique_sorted([3, 1, 3, 2]) == [1, 2, 3]", "assert unique_sorted([]) == []", "assert unique_sorted([5, 5]) == [5]")),
    ("gcd", "Write a Python function `gcd(a, b)` returning the greatest common divisor of two positive integers.",
     ("assert gcd(12, 18) == 6", "assert gcd(7, 13) == 1", "assert gcd(10, 10) == 10")),
    ("word_count", "Write a Python function `word_count(s)` returning the number of whitespace-separated words in s.",
     ("assert word_count('a b  c') == 3", "assert word_count('') == 0", "assert word_count('one') == 1")),
)
