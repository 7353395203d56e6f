"""Completion-level cases for the ``math`` verifier: whole completions against a gold, one row per
class of issue 12, in both modes. Every false-positive class has a row that must score 0.

The MATH-500 negative control at the end swaps each reference solution's boxed answer for another
problem's answer: the solution must then score 0, unless the two answers are equal as values.
"""

from __future__ import annotations

import json
import re

import pytest

from trl_grpo_plus.rewards import _math_pool, get_verifier
from trl_grpo_plus.rewards.math import _boxes

# (id, completion, gold, strict score, flexible score)
CASES = [
    # -- the answer is in LaTeX, with no box and no anchor phrase: the last math span
    ("span-interval", "The set of solutions is $[0,1)$", "[0,1)", 1.0, 1.0),
    ("span-frac", "$\\frac13$", "\\frac{1}{3}", 1.0, 1.0),
    ("span-labelled", "Solving for $k$ we get $k = \\frac{1}{3}$", "\\frac{1}{3}", 1.0, 1.0),
    ("span-relation", "Therefore $x \\geq 5$ is the solution.", "x \\ge 5", 1.0, 1.0),
    ("span-pmatrix", "The product is \\[\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}\\]",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", 1.0, 1.0),
    ("span-tuple", "The vertex is at $(1,4.5)$", "(1,\\frac{9}{2})", 1.0, 1.0),
    ("span-chain", "Adding up, $S = 2 + 3 + 4 = 9$", "9", 1.0, 1.0),
    ("span-display", "So we find\n$$y = -\\frac{1}{2}x + \\frac{3}{4}$$", "2x+4y-3=0", 1.0, 1.0),
    ("span-prose-in-dollars", "She earns $5 per hour and works 3 hours so $", "5", 0.0, 0.0),
    # must score 0: a number is never cut out of an interval, a tuple or a fraction
    ("fp-tuple-end", "The vertex is at $(1,4.5)$", "4.5", 0.0, 0.0),
    ("fp-interval-end", "so $x \\in [0,9)$", "9", 0.0, 0.0),
    ("fp-interval-ends", "The answer is $[0,9)$", "(0,9)", 0.0, 0.0),
    ("fp-denominator", "x is \\frac{1+\\sqrt{5}}{2}", "2", 0.0, 0.0),
    ("fp-boxed-denominator", "\\boxed{\\frac{1+\\sqrt{5}}{2}}", "2", 0.0, 0.0),
    ("fp-word", "AZYUK2A", "2", 0.0, 0.0),
    ("fp-subscript", "We use $F_{n + 1} = F_{n + 2} - F_n,$ then", "2", 0.0, 0.0),
    ("fp-inside-answer", "\\boxed{F_{n + 2} - F_n, \\frac{1}{F_n}}", "2", 0.0, 0.0),
    # -- the last-number fallback exists only in flexible mode, and pays only a standalone number
    ("fp-rambling", "First 7 apples, then 20 pears, no wait, I am not sure what the", "20", 0.0, 1.0),
    ("fp-truncated-mid-formula", "We multiply: $3 \\cdot 4 = 12$, then we get $12 + 8 =", "12", 0.0, 0.0),
    ("prose-number", "She pays 3 * 4 = 12 dollars, then 12 + 6 = 18 dollars", "18", 0.0, 1.0),
    # -- several boxes that together are the answer
    ("boxes-set", "The integers are $\\boxed{1}$ and $\\boxed{-2}$.", "1,-2", 1.0, 1.0),
    ("boxes-set-reordered", "The integers are $\\boxed{1}$ and $\\boxed{-2}$.", "\\{-2, 1\\}", 1.0, 1.0),
    ("boxes-pairs", "solutions: \\boxed{(1, 2)}, \\boxed{(2, 1)}", "(2,1),(1,2)", 1.0, 1.0),
    ("boxes-labelled", "so $x = \\boxed{3}$ and $y = \\boxed{4}$", "3, 4", 1.0, 1.0),
    ("boxes-quad-text", "\\boxed{2} \\quad \\text{and} \\quad \\boxed{5}", "2, 5", 1.0, 1.0),
    # must score 0: boxing every candidate is not the answer
    ("fp-box-every-candidate", "It is $\\boxed{1}$ or $\\boxed{2}$ or $\\boxed{3}$.", "3", 0.0, 0.0),
    ("fp-boxes-one-missing", "The integers are $\\boxed{1}$ and $\\boxed{-2}$.", "1,-2,3", 0.0, 0.0),
    ("boxes-apart", "We first get \\boxed{4}. Checking again, we find the answer is \\boxed{5}", "5", 1.0, 1.0),
    # -- relations and equations
    ("rel-flipped", "Thus $5 \\le x$.", "x \\ge 5", 1.0, 1.0),
    ("rel-negated", "$-x > -1$", "x < 1", 1.0, 1.0),
    ("rel-line", "The line is $2x+4y-3=0$", "y=-\\frac12x+\\frac34", 1.0, 1.0),
    ("rel-membership", "So $x \\in [-2,7]$", "-2 \\le x \\le 7", 1.0, 1.0),
    ("rel-membership-gold", "So $-2 \\le x \\le 7$", "x \\in [-2,7]", 1.0, 1.0),
    ("fp-rel-strict", "Thus $x > 5$.", "x \\ge 5", 0.0, 0.0),
    ("fp-rel-direction", "$x > 1$", "x < 1", 0.0, 0.0),
    ("fp-membership-ends", "So $x \\in (-2,7]$", "-2 \\le x \\le 7", 0.0, 0.0),
    # -- number formats
    ("num-spaced-thousands", "1 000", "1000", 1.0, 1.0),
    ("num-comma-thousands", "The final answer is 12,000,023. I hope it is correct.", "12000023", 1.0, 1.0),
    ("num-dollar", "The answer is \\$10.", "10", 1.0, 1.0),
    ("num-percent", "The answer is 10\\%.", "10", 1.0, 1.0),
    ("num-percent-word", "28 percent", "28\\%", 1.0, 1.0),
    ("fp-spaced-not-thousands", "1 000", "1", 0.0, 0.0),
    ("fp-trailing-zero", "\\boxed{50}", "5", 0.0, 0.0),
    # -- exact values
    ("euler", "\\boxed{e^{i\\pi}}", "-1", 1.0, 1.0),
    ("repeating-decimal", "\\boxed{0.\\overline{3}}", "\\frac{1}{3}", 1.0, 1.0),
    ("repeating-decimal-mixed", "\\boxed{1.2\\overline{3}}", "\\frac{37}{30}", 1.0, 1.0),
    ("fp-rounded-pi", "\\boxed{3.14159265}", "\\pi", 0.0, 0.0),
    ("fp-rounded-third", "\\boxed{0.333333}", "\\frac{1}{3}", 0.0, 0.0),
    ("fp-rounded-in-tuple", "\\boxed{(3.14159265, 1)}", "(\\pi, 1)", 0.0, 0.0),
    ("fp-rounded-in-matrix", "\\boxed{\\begin{pmatrix} 0.333333 \\\\ 1 \\end{pmatrix}}",
     "\\begin{pmatrix} \\frac13 \\\\ 1 \\end{pmatrix}", 0.0, 0.0),
    ("fp-repeating-not-rounded", "\\boxed{0.\\overline{3}}", "0.33", 0.0, 0.0),
    ("fp-interval-closed", "\\boxed{[1,2)}", "(1,2)", 0.0, 0.0),
    ("fp-tuple-order", "\\boxed{(2,1)}", "(1,2)", 0.0, 0.0),
    # -- anchors, tags and multiple choice
    ("anchor-final-after-boxes", "\\boxed{200} then \\boxed{255}. Final Answer: The final answer is $10,455$. "
     "I hope it is correct.", "10455", 1.0, 1.0),
    ("anchor-words-rank-below-box", "so $\\boxed{\\frac{130}{231}}$. The final answer is positive, because two "
     "of the factors are negative.", "\\frac{130}{231}", 1.0, 1.0),
    ("anchor-one-number", "Final Answer: Jane started growing Sphere 3 hours ago.", "3", 1.0, 1.0),
    ("anchor-is", "Final Answer: The largest $n$ is 34.", "34", 1.0, 1.0),
    ("tags-after-box", "<think>maybe \\boxed{4}</think><answer>9</answer>", "9", 1.0, 1.0),
    ("mc-letter", "The answer is (C).", "\\text{(C)}", 1.0, 1.0),
    ("fp-mc-value", "The answer is 3.", "\\text{(C)}", 0.0, 0.0),
    ("gold-solution", "\\boxed{42}", "We compute $6 \\cdot 7 = \\boxed{42}$.", 1.0, 1.0),
    ("gold-in-dollars", "\\boxed{\\frac{1}{3}}", "$\\frac13$", 1.0, 1.0),
]


@pytest.fixture(scope="module")
def verifiers():
    _math_pool.get_pool().start()
    return {mode: get_verifier("math", mode=mode, timeout_s=5.0) for mode in ("strict", "flexible")}


@pytest.mark.parametrize("case,completion,gold,strict,flexible", CASES, ids=[c[0] for c in CASES])
def test_completion_scores(verifiers, case, completion, gold, strict, flexible):
    for mode, expected in (("strict", strict), ("flexible", flexible)):
        assert verifiers[mode](prompts=["p"], completions=[completion], answer=[gold]) == [expected], mode


def test_default_mode_is_strict():
    v = get_verifier("math", warm_start=False)
    assert v.mode == "strict"
    assert v(prompts=["p"], completions=["First 7 apples, then 20 pears, I am not sure what the"], answer=["20"]) == [0.0]
    assert v.stats["no_answer"] == 1


def test_mode_is_checked_and_the_alias_maps_to_it():
    with pytest.raises(ValueError, match="mode='lenient' is not one of \\('strict', 'flexible'\\)"):
        get_verifier("math", mode="lenient", warm_start=False)
    with pytest.warns(DeprecationWarning, match="fallback_last_number= is deprecated"):
        v = get_verifier("math", fallback_last_number=True, warm_start=False)
    assert v.mode == "flexible" and v.fallback_last_number is True
    with pytest.warns(DeprecationWarning):
        assert get_verifier("math", fallback_last_number=False, warm_start=False).mode == "strict"
    with pytest.raises(ValueError, match="timeout_s=0"):
        get_verifier("math", timeout_s=0, warm_start=False)


# ------------------------------------------------------------------------------- negative control
def _swap_last_box(solution: str, answer: str) -> str:
    start, end, _ = _boxes(solution)[-1]
    return solution[:start] + "\\boxed{" + answer + "}" + solution[end:]


@pytest.mark.slow
def test_math500_swapped_answers_score_zero(shared_data, verifiers):
    rows = [json.loads(line) for line in open(shared_data / "math" / "math500_test.jsonl", encoding="utf-8")]
    pool = _math_pool.get_pool()
    completions, golds, pairs = [], [], []
    for i, row in enumerate(rows):
        other = rows[(i + 7) % len(rows)]["answer"]
        if re.sub(r"\s", "", other) == re.sub(r"\s", "", row["answer"]):
            continue
        completions.append(_swap_last_box(row["solution"], other))
        golds.append(row["answer"])
        pairs.append((row["answer"], other))
    assert len(completions) > 490
    # the answers that are equal as values (checked through math-verify both ways) may score 1
    same = {p for p, (_, v1), (_, v2) in zip(pairs, pool.run([(g, [o]) for g, o in pairs], 5.0),
                                             pool.run([(o, [g]) for g, o in pairs], 5.0)) if v1[0] is True and v2[0] is True}
    assert len(same) <= 3, same
    for mode, v in verifiers.items():
        scores = v(prompts=[""] * len(completions), completions=completions, answer=golds)
        paid = [(p, s) for p, s in zip(pairs, scores) if s != 0.0 and p not in same]
        assert paid == [], f"{mode}: {len(paid)} swapped answers were paid: {paid[:10]}"
    # and the unswapped solutions are all paid (the control is not vacuous)
    originals = [row["solution"] for row in rows]
    assert verifiers["strict"](prompts=[""] * 500, completions=originals, answer=[r["answer"] for r in rows]) == [1.0] * 500
