"""The three scoring modes: DeepSeekMath's rules case by case, and strict / flexible / deepseek side by side."""

import pytest

from trl_grpo_plus.benchmarks.datasets import Example
from trl_grpo_plus.benchmarks.deepseek_scoring import DeepSeekScorer, deepseek_answers, deepseek_equal, deepseek_list_equal
from trl_grpo_plus.benchmarks.scoring import Scorer

# (prediction, gold, expected): each row's reason is the rule it exercises
EQUAL = [
    ("42", "42", True),                        # equal strings
    ("42.0004", "42", True),                   # |d| <= 1e-3
    ("42.002", "42", False),                   # |d| > 1e-3
    ("0.5", "50", True),                       # percent rescaling: gold / 100
    ("5000", "50", True),                      # gold * 100
    ("50\\%", "0.5", True),                    # a percent sign divides by 100
    ("1,000", "1000", True),                   # thousands separators
    ("7", "8", False),
    ("(1,2)", "(1.0004, 2)", True),            # tuples part by part
    ("(1,3)", "(1,2)", False),
    ("[2,5)", "[2,5)", True),
    ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix} 1.0 & 2 \\end{pmatrix}", True),
    ("x = 5", "5", True),                      # short left side: compare the right side
    ("5", "y=5", True),
    ("2x + 4y = 3", "4y + 2x = 3", True),      # equations: a - (b) against c - (d)
    ("0.333", "\\frac{1}{3}", True),           # a plain fraction within 1e-3
    ("0.33", "\\frac13", False),
    ("\\frac{2}{4}", "\\frac{1}{2}", True),    # symbolic: math-verify
    ("", "3", False),
]


@pytest.mark.parametrize("pred,gold,expected", EQUAL)
def test_deepseek_equal(pred, gold, expected):
    assert deepseek_equal(pred, gold) is expected


@pytest.mark.parametrize("text,benchmark,fewshot,expected", [
    ("3 + 4 = 7. The answer is 7.\n\nQ: next 99", "gsm8k", True, ["7"]),       # cut at the first "Q: "
    ("145 - 15 = 130, so 145-15", "gsm8k", True, ["15"]),                        # a minus after a digit is binary
    ("costs 1,250 dollars", "gsm8k", True, ["1250"]),
    ("150% of $80,00", "gsm8k", True, ["8000"]),                                 # commas dropped, as DeepSeekMath does
    ("He had -5 left", "gsm8k", True, ["-5"]),
    ("so $x=2$.\nFinal Answer: The final answer is $2$. I hope it is correct.", "math", True, ["2"]),
    ("\\boxed{1} and \\boxed{-2}.", "math", False, ["1", "-2"]),               # every box
    ("it is \\boxed{50}% of it", "math", False, ["50%"]),                    # a % after the box is kept
    ("x \\boxed{50}", "math", False, ["50"]),
    ("So the answer is 12.\nmore text", "gsm8k", False, ["12"]),                # "he answer is" + first line
    ("The answer is 3, and then the answer is 4.", "gsm8k", False, ["4"]),  # the last one
    ("no numbers here", "math", False, []),
    ("wrong 3\n\nProblem:\nnext \\boxed{9}", "math", True, ["3"]),              # MATH few-shot: cut at Problem:
])
def test_deepseek_answers(text, benchmark, fewshot, expected):
    assert deepseek_answers(text, benchmark, "", fewshot) == expected


def test_deepseek_lists():
    assert deepseek_list_equal(["1", "-2"], ["-2", "1"])
    assert not deepseek_list_equal(["1"], ["-2", "1"])
    assert deepseek_list_equal(["7", "1", "-2"], ["-2", "1"])  # only the last len(gold) predictions count
    assert not deepseek_list_equal([], ["1"])
    s = DeepSeekScorer("math", fewshot=False)
    q = "Find all solutions, separated by commas."
    assert s.score("So $x = \\boxed{1, -2}$", "-2, 1", q) == (1.0, "1, -2")
    assert s.score("So $x = \\boxed{1}$", "-2, 1", q)[0] == 0.0
    assert s.score("The answer is 1 \\text{ and } -2", "-2 \\text{ and } 1", "Solve it.") == (1.0, "1, -2")
    assert s.score("\\boxed{50}% of the time", "0.5", "What fraction?")[0] == 1.0


def test_modes_side_by_side():
    scorer = Scorer("gsm8k", fewshot=False)
    ex = Example(id="a", question="How many?", gold="50")
    texts = ["I think it is 50 apples",          # prose only: flexible and deepseek read 50, strict reads nothing
             "The answer is 0.5",                # deepseek's percent rescaling
             "The answer is \\boxed{50}.",       # explicit: every mode
             "The answer is 49."]
    modes = scorer.score(ex, "prompt", texts)
    assert set(modes) == {"strict", "flexible", "deepseek"}
    assert modes["strict"][0] == [0.0, 0.0, 1.0, 0.0]
    assert modes["flexible"][0] == [1.0, 0.0, 1.0, 0.0]
    assert modes["deepseek"][0] == [1.0, 1.0, 1.0, 0.0]
    assert modes["strict"][1][0] is None and modes["flexible"][1][0] == "50"
    assert scorer.headline == "strict"
    custom = Scorer("gsm8k", verifier=lambda prompts, completions, **kw: [1.0] * len(completions))
    assert custom.headline == "custom" and custom.score(ex, "p", ["x"])["custom"][0] == [1.0]
    with pytest.raises(ValueError, match="headline='lenient'"):
        Scorer("gsm8k", headline="lenient")
    with pytest.raises(ValueError, match="sets fallback_last_number.*headline="):
        Scorer("gsm8k", verifier_options={"fallback_last_number": False})
