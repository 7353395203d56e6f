"""The gsm8k and format verifiers: number rules, gold reading, format modes and loopholes."""

from __future__ import annotations

import pickle
from fractions import Fraction

import pytest

from trl_grpo_plus.rewards import get_verifier
from trl_grpo_plus.rewards.format import format_score
from trl_grpo_plus.rewards.gsm8k import extract_answer, extract_gold, numbers_match, parse_number

# ------------------------------------------------------------------------------------------ gsm8k
NUMBERS = [
    ("72", Fraction(72)), ("72.0", Fraction(72)), ("72.", Fraction(72)), ("$72", Fraction(72)),
    ("\\$72.00", Fraction(72)), ("1,000", Fraction(1000)), ("1,234,567", Fraction(1234567)),
    ("1 000", Fraction(1000)), ("1\\,000", Fraction(1000)), ("1{,}000", Fraction(1000)),
    ("-5", Fraction(-5)), ("−5", Fraction(-5)), ("-$5", Fraction(-5)), ("0.25", Fraction(1, 4)),
    (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)), ("**18**", Fraction(18)), ("\\boxed{18}", Fraction(18)),
    ("18 dollars", Fraction(18)), ("25%", Fraction(25)), ("$\\$18$", Fraction(18)),
    # not one number
    ("1,00", None), ("12,3456", None), ("1/0", None), ("abc", None), ("", None), (None, None),
    ("3 4", None), ("1.2.3", None),
]


@pytest.mark.parametrize("text,value", NUMBERS)
def test_parse_number(text, value):
    assert parse_number(text) == value


MATCHES = [
    ("72", "72.0", True), ("1,000", "1000", True), ("$1,000.", "1000", True), ("-3", "−3", True),
    ("5", "500", False), ("500", "5", False), ("0.33", "1/3", False), ("-3", "3", False),
    ("72.01", "72", False), ("abc", "abc", False),
]


@pytest.mark.parametrize("pred,gold,expected", MATCHES)
def test_numbers_match(pred, gold, expected):
    assert numbers_match(pred, gold) is expected


GOLDS = [
    ("She has 5+3=<<5+3=8>>8 apples.\n#### 8", "8"),
    ("Total: 1,000 + 200 = 1,200\n#### 1,200", "1,200"),
    ("#### -7", "-7"),
    ("42", "42"),
    ("  3.5 ", "3.5"),
    ("no number here", None),
    ("#### ", None),
    (None, None),
]


@pytest.mark.parametrize("solution,gold", GOLDS)
def test_extract_gold(solution, gold):
    assert extract_gold(solution) == gold


PREDICTIONS = [
    # (completion, strict, flexible)
    ("so 5 + 3 = 8\n#### 8", "8", "8"),
    ("The answer is $1,200.", "1,200", "1,200"),
    ("We get \\boxed{-7}.", "-7", "-7"),
    ("<answer>12</answer>", "12", "12"),
    ("So $x = 18$.", "18", "18"),  # a labelled number in a math span
    ("The answer is 18 dollars.", "18", "18"),
    ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}", "\\frac{3}{4}"),
    ("1 000", "1 000", "1 000"),  # nothing but a number
    # only flexible guesses a number out of the prose
    ("She pays 3 * 4 = 12 dollars, then 12 + 6 = 18 dollars.", None, "18"),
    ("It costs $5 and then $10", None, "$10"),  # $ is money in GSM8K prose, not a math span
    # never a number cut out of a word or out of LaTeX, in either mode
    ("AZYUK2A", None, None),
    ("\\boxed{\\frac{1+\\sqrt{5}}{2}}", None, None),
    ("so x is \\frac{1+\\sqrt{5}}{2}", None, None),
    ("nothing numeric", None, None),
]


@pytest.mark.parametrize("text,strict,flexible", PREDICTIONS)
def test_gsm8k_extract_answer(text, strict, flexible):
    assert extract_answer(text) == strict
    assert extract_answer(text, mode="flexible") == flexible


def test_gsm8k_modes_and_the_deprecated_alias():
    # a rambling completion that mentions the gold number is paid only by the lenient mode
    rambling = "First 7 apples, then 20 pears; I am not sure what to"
    assert get_verifier("gsm8k")(completions=[rambling], answer=["20"]) == [0.0]
    assert get_verifier("gsm8k", mode="flexible")(completions=[rambling], answer=["20"]) == [1.0]
    assert parse_number("\\frac{3}{4}") == Fraction(3, 4) and parse_number("-\\dfrac{1}{2}") == Fraction(-1, 2)
    with pytest.warns(DeprecationWarning):
        v = get_verifier("gsm8k", fallback_last_number=True)
    assert v.mode == "flexible" and v.fallback_last_number is True
    with pytest.raises(ValueError, match="mode='loose' is not one of"):
        get_verifier("gsm8k", mode="loose")


def test_gsm8k_verifier_contract():
    v = get_verifier("gsm8k")
    assert v.__name__ == "gsm8k"
    solution = "Half of 40 is 40/2=<<40/2=20>>20.\n#### 20"
    completions = ["#### 20", [{"role": "assistant", "content": "The answer is 20.0"}], "I think 21", "no idea", "20"]
    golds = [solution, solution, "20", "20", "n/a"]
    assert v(prompts=["q"] * 5, completions=completions, answer=golds) == [1.0, 1.0, 0.0, 0.0, None]
    # strict: "I think 21" states no answer (no_answer), it is not read as the answer 21
    assert (v.stats["correct"], v.stats["incorrect"], v.stats["no_answer"], v.stats["gold_missing"]) == (2, 0, 2, 1)
    w = pickle.loads(pickle.dumps(get_verifier("gsm8k", gold_column="target", mode="strict")))
    assert w(prompts=["q", "q"], completions=["#### 4", "it is 4"], target=["4", "4"]) == [1.0, 0.0]


# ----------------------------------------------------------------------------------------- format
T, A = "<think>", "<answer>"
FORMAT = [
    # (completion, strict, soft, partial)
    ("<think>reason</think><answer>42</answer>", 1.0, 1.0, 1.0),
    ("<think>\nreason\n</think>\n<answer>\n42\n</answer>\n", 1.0, 1.0, 1.0),
    ("  <think>r</think>  <answer>42</answer>  ", 1.0, 1.0, 1.0),
    # the MULTILINE loophole: junk on a line after </answer> (open-r1's '$' matches at a line end)
    ("<think>\nr\n</think>\n<answer>\n42\n</answer>\nand also some junk", 0.0, 1.0, 1.0),
    ("<think>r</think><answer>42</answer>trailing", 0.0, 1.0, 1.0),
    ("preamble <think>r</think><answer>42</answer>", 0.0, 1.0, 1.0),
    # ... nor text between the pairs, in strict mode
    ("<think>r</think> so <answer>42</answer>", 0.0, 1.0, 1.0),
    # each pair exactly once
    ("<think>a</think><think>b</think><answer>42</answer>", 0.0, 0.0, 0.5),
    ("<think>r</think><answer>1</answer><answer>2</answer>", 0.0, 0.0, 0.5),
    ("<think>r</think><answer>42</answer></answer>", 0.0, 0.0, 0.75),
    # order
    ("<answer>42</answer><think>r</think>", 0.0, 0.0, 1.0),
    ("<think>r<answer>42</answer></think>", 0.0, 0.0, 1.0),
    # a non-empty answer
    ("<think>r</think><answer>   </answer>", 0.0, 0.0, 1.0),
    ("<think>r</think><answer></answer>", 0.0, 0.0, 1.0),
    # missing tags
    ("<think>r</think>", 0.0, 0.0, 0.5),
    ("<answer>42</answer>", 0.0, 0.0, 0.5),
    ("just 42", 0.0, 0.0, 0.0),
    ("", 0.0, 0.0, 0.0),
    ("<think>r</think><answer>42", 0.0, 0.0, 0.75),
]


@pytest.mark.parametrize("text,strict,soft,partial", FORMAT)
def test_format_modes(text, strict, soft, partial):
    assert format_score(text, "strict") == strict
    assert format_score(text, "soft") == soft
    assert format_score(text, "partial") == partial


def test_format_custom_tags_and_prefix():
    text = "<reasoning>r</reasoning><final>7</final>"
    assert format_score(text, think_tag="reasoning", answer_tag="final") == 1.0
    assert format_score(text) == 0.0
    v = get_verifier("format", think_tag="reasoning", answer_tag="final", mode="strict")
    assert v(completions=[text, "<think>r</think><answer>7</answer>"]) == [1.0, 0.0]
    # chat templates that open <think> in the prompt
    p = get_verifier("format", prefix_think=True)
    assert p(completions=["r</think><answer>7</answer>", "<think>r</think><answer>7</answer>"]) == [1.0, 0.0]
    assert p.stats["passed"] == 1 and p.stats["failed"] == 1


def test_format_verifier_rejects_bad_options():
    with pytest.raises(ValueError, match="valid modes"):
        get_verifier("format", mode="lenient")
    with pytest.raises(ValueError, match="bare word"):
        get_verifier("format", think_tag="<think>")


def test_format_chat_messages_and_big_input():
    v = get_verifier("format", mode="soft")
    msg = [{"role": "assistant", "content": "<think>r</think><answer>1</answer>"}]
    big = "<think>" + "x" * 1_000_000 + "</think><answer>1</answer>" + "\n" * 10
    assert v(completions=[msg, big, None]) == [1.0, 1.0, 0.0]
