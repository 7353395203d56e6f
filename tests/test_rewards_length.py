"""Length-shaped rewards (overlong, length, repetition) and language consistency: hand-derived tables, fail-closed
cases, stats, the registry, and agreement with TRL's plain functions where TRL has one."""

from __future__ import annotations

import math
import pickle

import pytest

from trl_grpo_plus.rewards import get_verifier, list_verifiers
from trl_grpo_plus.rewards.length import cosine_length_reward, overlong_penalty, repetition_penalty, script_fraction


def _ids(*lengths):
    return [[7] * n for n in lengths]


def test_registered():
    assert {"overlong", "length", "repetition", "language"} <= set(list_verifiers())


# ---- overlong -------------------------------------------------------------------------------------------------------
# L_max = 10, L_cache = 4: no penalty up to 6 tokens, then (6 − L)/4, then −1 beyond 10
@pytest.mark.parametrize(("length", "expected"), [(0, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (10, -1.0), (11, -1.0),
                                                  (500, -1.0)])
def test_overlong_penalty_table(length, expected):
    assert overlong_penalty(length, 10, 4) == expected


def test_overlong_verifier_counts_tokens_and_fails_closed_without_them():
    verifier = get_verifier("overlong", max_length=10, cache_length=4)
    scores = verifier(prompts=["p"] * 4, completions=["x"] * 4, completion_ids=_ids(5, 7, 10, 12))
    assert scores == [0.0, -0.25, -1.0, -1.0]
    assert (verifier.stats["within"], verifier.stats["soft_zone"], verifier.stats["over_limit"]) == (1, 2, 1)
    assert verifier(prompts=["p"], completions=["a very long text indeed"]) == [None]  # no token ids: no guess
    assert verifier.stats["no_length"] == 1
    chars = get_verifier("overlong", max_length=10, cache_length=4, unit="chars")
    assert chars(prompts=["p"], completions=["12345678"]) == [-0.5]


def test_overlong_matches_trls_soft_overlong_punishment():
    from trl.rewards import get_soft_overlong_punishment

    ids = _ids(*range(0, 30, 3))
    ours = get_verifier("overlong", max_length=20, cache_length=8)(prompts=["p"] * len(ids), completions=["x"] * len(ids),
                                                                   completion_ids=ids)
    assert ours == pytest.approx(get_soft_overlong_punishment(20, 8)(completion_ids=ids), abs=1e-12)


@pytest.mark.parametrize("options", [dict(max_length=10, cache_length=0), dict(max_length=4, cache_length=8),
                                     dict(max_length=10, cache_length=4, unit="bytes")])
def test_overlong_bad_options_name_the_fix(options):
    with pytest.raises(ValueError, match="cache_length|unit="):
        get_verifier("overlong", **options)


# ---- length ---------------------------------------------------------------------------------------------------------
def test_cosine_shape_end_points_and_midpoint():
    # c(L) = ½(1 + cos(πL/L_max)): 1 at 0, ½ at L_max/2, 0 at L_max and beyond
    assert cosine_length_reward(0, 100, 1.0, 0.5) == 1.0
    assert cosine_length_reward(50, 100, 1.0, 0.5) == pytest.approx(0.75)
    assert cosine_length_reward(100, 100, 1.0, 0.5) == pytest.approx(0.5)
    assert cosine_length_reward(400, 100, -1.0, -0.5) == pytest.approx(-0.5)
    assert cosine_length_reward(25, 100, -1.0, -0.5) == pytest.approx(-0.5 - 0.5 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_length_cosine_is_tied_to_correctness():
    verifier = get_verifier("length", shape="cosine", correctness="gsm8k", max_length=100)
    completions = ["#### 4", "#### 4", "#### 5", "#### 5", "no answer"]
    scores = verifier(prompts=["q"] * 5, completions=completions, answer=["4"] * 5,
                      completion_ids=_ids(0, 100, 0, 50, 100))
    # correct short 1.0, correct long 0.5; wrong short −1.0, wrong at L_max/2 −0.75; no answer = wrong (gsm8k 0.0)
    assert scores == pytest.approx([1.0, 0.5, -1.0, -0.75, -0.5])
    assert (verifier.stats["correct"], verifier.stats["wrong"]) == (2, 3)


def test_length_is_none_when_correctness_cannot_tell():
    verifier = get_verifier("length", shape="cosine", correctness="gsm8k", max_length=100)
    scores = verifier(prompts=["q"] * 2, completions=["#### 4", "#### 4"], answer=["no gold here", "4"],
                      completion_ids=_ids(10, 10))
    assert scores[0] is None and scores[1] is not None and verifier.stats["unjudged"] == 1


def test_length_linear_is_kimi_group_relative():
    verifier = get_verifier("length", shape="linear", correctness="gsm8k")
    prompts = ["p", "p", "p", "p", "q", "q"]
    completions = ["#### 4", "#### 5", "#### 4", "#### 5", "#### 1", "#### 1"]
    # group p lengths 2, 4, 6, 10: λ = 0.5 − (L − 2)/8 = 0.5, 0.25, 0, −0.5; correct keeps λ, wrong min(0, λ)
    # group q lengths equal: λ = 0
    scores = verifier(prompts=prompts, completions=completions, answer=["4"] * 4 + ["1"] * 2,
                      completion_ids=_ids(2, 4, 6, 10, 3, 3))
    assert scores == pytest.approx([0.5, 0.0, 0.0, -0.5, 0.0, 0.0])


def test_length_needs_max_length_for_cosine_and_a_valid_shape():
    with pytest.raises(ValueError, match="needs max_length"):
        get_verifier("length", correctness="gsm8k")
    with pytest.raises(ValueError, match="'cosine' or 'linear'"):
        get_verifier("length", shape="exp", correctness="gsm8k")


# ---- repetition -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("the cat sat on the mat", 0.0),  # 4 trigrams, all distinct
    ("a b c a b c a b c", -(1 - 3 / 7)),  # 7 trigrams, 3 distinct
    ("go go go go go", -(1 - 1 / 3)),  # 3 trigrams, 1 distinct
    ("Go GO go go", -(1 - 1 / 2)),  # lower-cased: 2 trigrams, 1 distinct
    ("too short", 0.0),  # fewer than 3 words
])
def test_repetition_table(text, expected):
    verifier = get_verifier("repetition")
    assert verifier(prompts=["p"], completions=[text]) == [pytest.approx(expected)]


def test_repetition_on_tokens_and_scale():
    verifier = get_verifier("repetition", ngram_size=2, max_penalty=-0.5, unit="tokens")
    # tokens 1 2 1 2 1: bigrams (1,2) (2,1) (1,2) (2,1): 2 distinct of 4 → −0.5 · ½
    assert verifier(prompts=["p"], completions=["x"], completion_ids=[[1, 2, 1, 2, 1]]) == [-0.25]
    assert verifier(prompts=["p"], completions=["x"]) == [None]
    assert repetition_penalty([1, 1, 1], 1, -1.0) == pytest.approx(-2 / 3)
    with pytest.raises(ValueError, match="≤ 0"):
        get_verifier("repetition", max_penalty=0.5)


def test_repetition_matches_trls_function_on_token_ids():
    from trl.rewards import get_repetition_penalty_reward

    ids = [[1, 2, 3, 1, 2, 3, 1, 2, 3], [5, 6, 7, 8, 5, 9], [4, 4, 4, 4], [1, 2]]
    ours = get_verifier("repetition", ngram_size=3, max_penalty=-1.0, unit="tokens")(
        prompts=["p"] * 4, completions=["x"] * 4, completion_ids=ids)
    assert ours == pytest.approx(get_repetition_penalty_reward(ngram_size=3, max_penalty=-1.0)(completion_ids=ids),
                                 abs=1e-12)


# ---- language -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "target", "expected"), [
    ("<think>First add 3 and 4.</think><answer>7</answer>", "en", 1.0),
    ("<think>先把 3 和 4 相加</think>", "zh", 1.0),
    ("<think>hello 世界</think>", "en", 5 / 7),  # 5 Latin letters of 7
    ("<think>hello 世界</think>", "zh", 2 / 7),
    ("<think>设 $x = \\frac{a}{b}$ 所以 x 等于</think>", "zh", 5 / 6),  # LaTeX removed; one Latin x left
    ("<think>Сначала сложим</think>", "ru", 1.0),
    ("<think>これは テスト です 漢字</think>", "ja", 1.0),  # Hiragana + Katakana + Han
    ("no think tags, all of it counts", "Latin", 1.0),
    ("<think>```python\nprint('hi')\n```\n计算</think>", "zh", 1.0),  # code left out
])
def test_language_consistency_table(text, target, expected):
    verifier = get_verifier("language", target=target)
    assert verifier(prompts=["p"], completions=[text]) == [pytest.approx(expected)]


def test_language_fails_closed_and_reads_a_target_column():
    verifier = get_verifier("language", target=None, target_column="lang")
    scores = verifier(prompts=["p"] * 3, completions=["<think>12 + 30 = 42</think>", "<think>plus</think>", "plus"],
                      lang=["en", "zh", None])
    assert scores == [None, 0.0, None]  # no letter → can't tell; no target → None
    assert verifier.stats["no_letters"] == 1 and verifier.stats["no_target"] == 1
    assert script_fraction("∑ 1 2 3 !", ("Latin",)) is None
    with pytest.raises(ValueError, match="unknown target 'klingon'"):
        get_verifier("language", target="klingon")


def test_verifiers_are_picklable_trl_reward_functions():
    for verifier in (get_verifier("overlong", max_length=8, cache_length=2), get_verifier("repetition"),
                     get_verifier("language", target="en"),
                     get_verifier("length", shape="linear", correctness="gsm8k")):
        clone = pickle.loads(pickle.dumps(verifier))
        assert clone.__name__ == verifier.__name__
        assert len(clone(prompts=["p"], completions=["a b c"], completion_ids=[[1, 2, 3]], answer=["3"])) == 1
