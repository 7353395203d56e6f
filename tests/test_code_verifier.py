"""The `code` verifier: program extraction, test columns, scoring, TRL contract."""

from __future__ import annotations

import json
import pickle

import pytest

from trl_grpo_plus.rewards import get_verifier, list_verifiers
from trl_grpo_plus.rewards.code import CodeVerifier, extract_program

ADD = "def add(a, b):\n    return a + b\n"
HALF = "def add(a, b):\n    return a + b if a < 5 else 0\n"
ASSERTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(7, 1) == 8", "assert add(9, 9) == 18"]


@pytest.mark.parametrize("text, expected", [
    ("no fence at all\nx = 1", "no fence at all\nx = 1"),
    ("Here:\n```python\nx = 1\n```\nthen\n```python\nx = 2\n```\n", "x = 2\n"),  # last python block
    ("```py\ny = 3\n```", "y = 3\n"),
    ("```\nz = 4\n```", "z = 4\n"),                                              # bare fence
    ("```python\nx = 1\n```\n```text\noutput: 1\n```", "x = 1\n"),               # non-python block skipped
    ("Answer:\n```python\ndef f():\n    return 1", "def f():\n    return 1"),  # unclosed (truncated) fence
    ("```Python3\nw = 5\n```", "w = 5\n"),
])
def test_extract_program_table(text, expected):
    assert extract_program(text) == expected


def test_registered_and_picklable():
    assert "code" in list_verifiers()
    v = get_verifier("code", binary=True, timeout_s=3)
    assert isinstance(v, CodeVerifier) and v.__name__ == "code"
    clone = pickle.loads(pickle.dumps(v))
    assert clone.binary is True and clone.timeout_s == 3


def test_fraction_and_binary_scores_with_tests_column():
    completions = [f"```python\n{ADD}```", f"Sure.\n```python\n{HALF}```", "def add(a, b):\n    return 0\n"]
    tests = [ASSERTS] * 3
    frac = get_verifier("code")(prompts=["p"] * 3, completions=completions, tests=tests)
    # HALF passes add(1,2) and add(2,2) only -> 2/4; the constant-0 one passes none
    assert frac == [1.0, 0.5, 0.0]
    binary = get_verifier("code", binary=True)(prompts=["p"] * 3, completions=completions, tests=tests)
    assert binary == [1.0, 0.0, 0.0]


def test_chat_completions_json_string_tests_and_custom_column():
    v = get_verifier("code", tests_column="cases")
    cases = json.dumps([{"input": "3\n", "output": "9\n"}, {"input": "4\n", "output": "16\n"}])
    completions = [[{"role": "assistant", "content": "```python\nn = int(input())\nprint(n * n)\n```"}],
                   [{"role": "assistant", "content": "```python\nn = int(input())\nprint(n + n)\n```"}]]
    # n + n matches 9 for neither 3 (6) nor... 4 + 4 = 8 != 16 -> 0.0
    assert v(prompts=["p", "p"], completions=completions, cases=[cases, cases]) == [1.0, 0.0]


def test_humaneval_columns_with_body_only_completion():
    prompt = 'def double(x):\n    """Twice x."""\n'
    test = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(0) == 0\n"
    v = get_verifier("code")
    scores = v(prompts=[prompt, prompt, prompt],
               completions=["    return 2 * x\n", "```python\ndef double(x):\n    return x + x\n```", "    return x\n"],
               test=[test] * 3, entry_point=["double"] * 3)
    assert scores == [1.0, 1.0, 0.0]


def test_mbpp_columns_with_setup_code():
    v = get_verifier("code")
    scores = v(prompts=["p"], completions=["def first(xs):\n    return xs[0]\n"],
               test_list=[["assert first(DATA) == 5", "assert first([1]) == 1"]], test_setup_code=["DATA = [5, 6]"])
    assert scores == [1.0]


def test_unscorable_rows_give_none_and_are_counted():
    v = get_verifier("code")
    scores = v(prompts=["p", "p"], completions=[ADD, ADD], tests=[None, ASSERTS])
    assert scores == [None, 1.0]
    assert v.stats["no_tests"] == 1 and v.stats["unscorable"] == 1 and v.stats["status_passed"] == 1


def test_bad_tests_value_scores_none_without_raising():
    v = get_verifier("code")
    assert v(prompts=["p"], completions=[ADD], tests=[[{"input": "1"}]]) == [None]
