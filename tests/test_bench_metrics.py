"""Metrics of the benchmark harness: pass@k against brute force, maj@k tie rules, intervals."""

import itertools
import math

import pytest

from trl_grpo_plus.benchmarks.metrics import (
    as_correct,
    bootstrap_interval,
    breakdown,
    default_ks,
    maj_at_k,
    majority_vote,
    pass_at_k,
    summarize,
    wilson_interval,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all size-k subsets of n samples (c of them correct) holding >= 1 correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_subset_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_hand_values():
    # n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # k=1 is the plain fraction correct: 3/10
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # large n stays finite and exact in the product form: 1 - C(190,100)/C(200,100)
    expected = 1 - math.comb(190, 100) / math.comb(200, 100)
    assert pass_at_k(200, 10, 100) == pytest.approx(expected, rel=1e-9)


def test_pass_at_k_rejects_k_above_n():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(3, 4, 1)


def test_majority_vote_tie_goes_to_first_occurrence():
    # "3" and "5" both have 2 votes; "3" appears first (index 0) -> it wins
    assert majority_vote(["3", "5", "5", "3"]) == 0
    # same counts, opposite order -> "5" (first seen at index 0) wins
    assert majority_vote(["5", "3", "3", "5"]) == 0
    # a strict majority beats an earlier answer
    assert majority_vote(["3", "5", "5"]) == 1


def test_majority_vote_ignores_missing_answers_and_normalises():
    assert majority_vote([None, None, "7"]) == 2
    assert majority_vote([None, None]) is None
    # " 5 ", "5" and "$5$" are the same vote: 3 votes for 5 against 2 for 4
    assert majority_vote(["4", " 5 ", "4", "5", "$5$"]) == 1


def test_maj_at_k_scores_the_winning_answer():
    answers = ["3", "5", "5", "3"]
    scores = [0.0, 1.0, 1.0, 0.0]
    assert maj_at_k(answers, scores, 4) == 0.0  # tie 2-2 -> "3" (first) -> wrong
    assert maj_at_k(answers, scores, 3) == 1.0  # "5" has 2 of 3 -> right
    assert maj_at_k(answers, scores, 1) == 0.0  # only the first sample votes
    assert maj_at_k([None, None], [None, None], 2) == 0.0  # no votes -> wrong
    with pytest.raises(ValueError):
        maj_at_k(answers, scores, 5)


def test_as_correct_counts_none_as_wrong():
    assert [as_correct(s) for s in (None, 0.0, 0.4, 0.5, 1.0, 1)] == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_wilson_interval_hand_values():
    z2 = 1.959963984540054**2
    # 0/10: lower 0, upper = z^2 / (n + z^2)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2), abs=1e-12)
    # 5/10: centred on 0.5, half-width z*sqrt(0.025 + z^2/400) / (1 + z^2/10)
    lo, hi = wilson_interval(5, 10)
    half = 1.959963984540054 * math.sqrt(0.025 + z2 / 400) / (1 + z2 / 10)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_interval_brackets_mean_and_collapses_on_constants():
    assert bootstrap_interval([1.0] * 20) == (1.0, 1.0)
    values = [0.0] * 50 + [1.0] * 50
    lo, hi = bootstrap_interval(values, resamples=500)
    assert lo < 0.5 < hi and hi - lo < 0.3


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]


def test_summarize_hand_example():
    rows = [
        # 1 of 2 correct, first one right; both answer "4" (tie-free majority) -> maj right
        {"scores": [1.0, 0.0], "answers": ["4", "4"]},
        # 1 of 2 correct, first wrong; tie "2" vs "3" -> "2" (first) which is wrong
        {"scores": [0.0, 1.0], "answers": ["2", "3"]},
        # unscorable first sample, second wrong
        {"scores": [None, 0.0], "answers": [None, "9"]},
    ]
    s = summarize(rows, bootstrap_resamples=200)
    assert s["num_problems"] == 3 and s["num_samples"] == 2
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["correct"] == 1
    assert s["unscorable_samples"] == 1
    assert s["avg@n"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # pass@1 = avg correct fraction; pass@2 = any correct
    assert s["pass@k"]["1"] == pytest.approx(1 / 3)
    assert s["pass@k"]["2"] == pytest.approx(2 / 3)
    # maj@1 = first samples' correctness; maj@2 = [1, 0, 0]
    assert s["maj@k"]["1"] == pytest.approx(1 / 3)
    assert s["maj@k"]["2"] == pytest.approx(1 / 3)
    lo, hi = s["accuracy_ci95"]
    assert lo < 1 / 3 < hi


def test_breakdown_groups_and_orders_levels_numerically():
    rows = [
        {"scores": [1.0], "level": 10},
        {"scores": [0.0], "level": 2},
        {"scores": [1.0], "level": 2},
        {"scores": [1.0], "level": None},
    ]
    b = breakdown(rows, lambda r: r.get("level"))
    assert list(b) == ["2", "10", "unknown"]
    assert b["2"] == {"n": 2, "correct": 1, "accuracy": 0.5, "ci95": list(wilson_interval(1, 2))}
    assert b["10"]["accuracy"] == 1.0
