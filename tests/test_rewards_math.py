"""The math verifier: extraction, equivalence tables, the verifier contract, the worker pool."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from trl_grpo_plus.rewards import get_verifier
from trl_grpo_plus.rewards import _math_pool
from trl_grpo_plus.rewards.math import MathVerifier, extract_answer, is_equivalent, quick_verdict, score_answers

# ------------------------------------------------------------------------------------ extraction
EXTRACTION = [
    # (completion, strict answer, flexible answer). Tier 1 (box group, <answer>, "final answer": the
    # last stated wins) > tier 2 ("the answer is", ####) > tier 3 (last math span) > tier 4 (bare answer)
    # > flexible only: the last number standing alone in the prose.
    ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", "\\frac{1}{2}"),
    ("nested \\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}} end", "\\frac{\\sqrt{3}}{\\left(2\\right)}", None),
    ("first \\boxed{1} then \\boxed{2}", "2", None),  # a word between boxes: separate answers, the last
    ("\\fbox{7} is it", "7", None),
    ("brace-less: $\\boxed 5$", "5", None),
    ("empty \\boxed{} then \\boxed{3}", "3", None),
    ("\\boxed{4} but <answer>9</answer>", "9", None),  # tier 1: the one stated last
    ("<answer>9</answer> so \\boxed{4}", "4", None),
    ("<think>2+2=4</think><answer> 4 </answer>", "4", None),
    ("<answer>$\\frac{3}{4}$</answer>", "\\frac{3}{4}", None),
    ("Thus the final answer is $\\pi/2$. I hope", "\\pi/2", None),
    ("The final answer is 12.\nThe answer is 13", "12", None),  # "final answer" outranks "the answer"
    ("Final Answer: (1, 2)", "(1, 2)", None),
    ("The final answer is $\\$32,\\!348$.", "\\$32,\\!348", None),  # an escaped dollar does not close $..$
    ("The final answer is 12,000,023. I hope it is correct.", "12,000,023", None),  # cut at the sentence end
    ("Final Answer: The largest $n$ is 34.", "34", None),  # after the sentence's last "is"
    ("So the answer is **42**.", "42", None),
    ("The answer is 42 apples.", "42", None),
    ("\\boxed{200} then \\boxed{255}. Final Answer: The final answer is $10,455$. I hope it is correct.",
     "10,455", None),  # the final-answer sentence comes after the boxes
    ("Natalia sold 48+24 = 72 clips.\n#### 72", "72", None),
    ("We get $x = 3$ and then $y = 4$.", "y = 4", None),  # last math span
    ("Adding up, $S = 2 + 3 + 4 = 9$", "S = 9", None),  # a chain states its last value
    ("Then $2 + 3 = 5 = 10/2$ and", "10/2", None),
    ("so $0 < x = 3 = y$", "0 < x = 3 = y", None),  # a relation in it: not a chain of equalities
    ("We multiply: $3 \\cdot 4 = 12$, then we get $12 + 8 =", None, None),  # cut off mid-formula: no number from it
    ("no anchor, numbers 3 and then 17.5 here.", None, "17.5"),
    ("one-half is 1/2", None, "1/2"),
    ("no numbers at all", None, None),
    ("", None, None),
    ("unbalanced \\boxed{\\frac{1}{2}", None, None),  # unbalanced box ignored; no number out of LaTeX
    ("unbalanced \\boxed{\\frac{1}{2} so 7 it is", None, "7"),
    ("1 000", "1 000", None),  # nothing but an answer: that answer, in strict mode too
]


@pytest.mark.parametrize("text,strict,flexible", EXTRACTION)
def test_extract_answer(text, strict, flexible):
    assert extract_answer(text) == strict
    assert extract_answer(text, mode="strict") == strict
    assert extract_answer(text, mode="flexible") == (flexible if strict is None else strict)


def test_extract_answer_modes_and_the_deprecated_alias():
    assert extract_answer("numbers 3 and 4") is None
    assert extract_answer("numbers 3 and 4", mode="flexible") == "4"
    assert extract_answer("numbers 3 and \\boxed{4}") == "4"
    with pytest.warns(DeprecationWarning, match="mode='flexible'"):
        assert extract_answer("numbers 3 and 4", fallback_last_number=True) == "4"
    with pytest.warns(DeprecationWarning):
        assert extract_answer("numbers 3 and 4", fallback_last_number=False) is None
    with pytest.raises(ValueError, match="mode='lenient' is not one of"):
        extract_answer("1", mode="lenient")
    with pytest.raises(ValueError, match="contradicts fallback_last_number"), pytest.warns(DeprecationWarning):
        extract_answer("1", mode="flexible", fallback_last_number=False)


def test_extract_answer_handles_non_text():
    assert extract_answer(None) is None
    assert extract_answer(123) is None
    assert extract_answer("a\x00\\boxed{1\x002}") == "12"


# ----------------------------------------------------------------------------------- equivalence
# (gold, prediction, expected), grouped by theme, in the style of Math-Verify's own tables.
EQUIVALENT = [
    # fractions, decimals, roots, symbolic identities
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\frac{3}{4}", "\\dfrac{3}{4}", True),
    ("\\frac{3}{4}", "\\tfrac34", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\frac{\\pi}{6}", "\\pi/6", True),
    ("72", "72.0", True),
    ("-3", "-3", True),
    ("1000", "1,000", True),
    # sets, intervals, tuples, matrices, equations
    ("\\{1,2,3\\}", "\\{3,1,2\\}", True),
    ("[1,2)", "[1,2)", True),
    ("(-\\infty, 3]", "(-\\infty,3]", True),
    ("(-\\infty,-2)\\cup(3,\\infty)", "(3,\\infty)\\cup(-\\infty,-2)", True),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("3", "x=3", True),
    ("x=3", "3", True),
    ("y = 2x + 3", "y=3+2x", True),
    ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", True),  # the same plane (linear screen: proportional)
    # percent, units, \text{}, degrees, money, multiple choice
    ("50\\%", "50", True),
    ("10\\text{ cm}", "10", True),
    ("30^\\circ", "30", True),
    ("\\$18.90", "18.90", True),
    ("\\text{Evelyn}", "Evelyn", True),
    ("\\text{(C)}", "C", True),
    ("\\text{(C)}", "(C)", True),
    ("B", "\\textbf{B}", True),
    # what math-verify alone gets wrong (see _math_worker.normalize_answer and _imaginary_unit)
    ("185", "185\\", True),
    ("-1", "e^{i\\pi}", True),
    ("\\frac13", "0.\\overline{3}", True),
    ("\\frac{37}{30}", "1.2\\overline{3}", True),
    ("1000", "1 000", True),
    ("28\\%", "28 percent", True),
    ("\\frac{1}{2}", "$\\frac12$", True),
    ("x \\in [-2,7]", "-2 \\le x \\le 7", True),
    ("-2 \\le x \\le 7", "x \\in [-2,7]", True),
]

NOT_EQUIVALENT = [
    # near-misses the Qwen/DeepSeek graders or a 6-decimal rounding accept
    ("\\pi", "3.14", False),
    ("\\pi", "3.14159265", False),
    ("\\sqrt{2}", "1.41", False),
    ("\\sqrt{2}", "1.414214", False),
    ("\\frac{1}{3}", "0.333333", False),
    ("500", "5", False),
    ("5", "500", False),
    ("5", "50", False),
    ("[1,2)", "(1,2)", False),
    ("(1,2)", "[1,2]", False),
    ("(1,2)", "(2,1)", False),
    ("\\{1,2\\}", "\\{1,2,3\\}", False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", False),
    ("x^2+2x+1", "(x-1)^2", False),
    ("\\frac{3\\sqrt{3}}{4}", "\\cot x", False),
    ("-3", "3", False),
    ("\\text{(C)}", "D", False),
    ("\\text{(C)}", "3", False),
    ("2\\sqrt{2}", "2\\sqrt{3}", False),
    ("72", "72.01", False),
    ("2", "F_{n + 1} = F_{n + 2} - F_n,, \\frac{1}{F_n}", False),  # no number picked out of an answer
    ("0.33", "0.\\overline{3}", False),
    ("1", "e^{i\\pi}", False),
    ("x \\in [-2,7]", "-2 < x \\le 7", False),
    ("1000", "1 001", False),
    ("5x - 7y + 11z + 4 = 0", "5x - 7y + 11z + 4 = 1", False),  # parallel planes
    ("x=5", "x=5+1", False),
]


@pytest.fixture(scope="module")
def pool():
    p = _math_pool.get_pool()
    p.start()
    return p


@pytest.mark.parametrize("gold,pred,expected", EQUIVALENT + NOT_EQUIVALENT)
def test_is_equivalent_table(pool, gold, pred, expected):
    assert is_equivalent(pred, gold, timeout_s=5.0) is expected


def test_tables_through_the_parser_not_only_fast_paths(pool):
    # The string/number fast paths must not be what makes the tables pass: ask the workers directly.
    groups = [(g, [p]) for g, p, _ in EQUIVALENT + NOT_EQUIVALENT]
    results = pool.run(groups, 5.0)
    got = [verdicts[0] for _, verdicts in results]
    assert got == [e for _, _, e in EQUIVALENT + NOT_EQUIVALENT]


QUICK = [
    ("5", "500", False), ("72.0", "72", True), ("-0", "0", True), (".5", "0.5", True),
    ("\\left( 3, \\dfrac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True), ("$7$", "7", True),
    ("1\\,000", "1000", True), ("\\sqrt{2}", "1.41", None), ("1,000", "1000", None), ("x", "y", None),
    ("\\dfrac{6}{8}", "0.75", True), ("-\\frac{1}{3}", "-1/3", True), ("\\frac{1}{3}", "0.333333", False),
    ("\\frac{-2}{4}", "-\\frac{1}{2}", True), ("\\frac{1}{0}", "1", None), ("\\frac{1}{2}", "\\frac{1}{2}+1", None),
]


@pytest.mark.parametrize("pred,gold,expected", QUICK)
def test_quick_verdict(pred, gold, expected):
    assert quick_verdict(pred, gold) is expected


@pytest.mark.parametrize("bad", [None, "", "   ", 3])
def test_is_equivalent_never_raises(bad):
    assert is_equivalent(bad, "1") is False
    assert is_equivalent("1", bad) is False


# ------------------------------------------------------------------------------ verifier contract
def test_verifier_contract_strings_chat_and_none():
    v = get_verifier("math")
    assert isinstance(v, MathVerifier) and v.__name__ == "math"
    completions = [
        "so \\boxed{\\frac{1}{2}}",  # correct
        [{"role": "assistant", "content": "The answer is 0.5"}],  # chat message list, correct
        "\\boxed{0.51}",  # wrong
        "nothing to see",  # no answer -> 0.0
        "\\boxed{2}",  # gold missing -> None
    ]
    golds = ["\\frac12", "\\frac12", "\\frac12", "\\frac12", None]
    assert v(prompts=["p"] * 5, completions=completions, answer=golds) == [1.0, 1.0, 0.0, 0.0, None]
    assert v.stats["correct"] == 2 and v.stats["incorrect"] == 1 and v.stats["no_answer"] == 1
    assert v.stats["gold_missing"] == 1 and v.stats["unscorable"] == 1 and v.stats["samples"] == 5


def test_verifier_gold_column_and_solution_gold():
    v = get_verifier("math", gold_column="solution", warm_start=False)
    # a full solution as gold: its boxed answer is used
    sol = "We compute 6 * 7 = 42, so the result is $\\boxed{42}$."
    assert v(prompts=["p", "p"], completions=["\\boxed{42}", "\\boxed{24}"], solution=[sol, sol]) == [1.0, 0.0]
    # the default column is absent here: unscorable, not an exception
    assert get_verifier("math")(prompts=["p"], completions=["1"], solution=["1"]) == [None]


def test_verifier_is_picklable_and_keeps_options():
    v = get_verifier("math", gold_column="gold", timeout_s=2.5, warm_start=False)
    w = pickle.loads(pickle.dumps(v))
    assert (w.__name__, w.gold_column, w.timeout_s) == ("math", "gold", 2.5)
    assert w(prompts=["p"], completions=["\\boxed{3}"], gold=["3"]) == [1.0]


def test_gold_parsed_once_per_group():
    pool = _math_pool.MathPool(workers=1)
    try:
        gold = "\\frac{\\sqrt{3}}{2}"
        preds = ["\\frac{\\sqrt3}{2}", "\\sqrt{3}/2", "0.866", "\\frac{1}{2}", "\\sin 60^\\circ",
                 "\\frac{3}{2\\sqrt{3}}", "\\frac{2}{\\sqrt{3}}", "\\cos(\\pi/6)"]
        ((status, verdicts),) = pool.run([(gold, preds)], 5.0)
        assert status is True and len(verdicts) == 8
        assert verdicts[:2] == [True, True] and verdicts[2:4] == [False, False]
        assert pool.gold_parses == 1  # once for 8 completions
        pool.run([(gold, ["\\frac{\\sqrt{3}}{2}"])], 5.0)
        assert pool.gold_parses == 1  # a later group with the same gold hits the worker's cache
    finally:
        pool.close()


def test_score_answers_dedupes_and_spreads_groups(pool):
    before = pool.gold_parses
    groups = [("\\frac{1}{7}", ["1/7", "1/7", "\\frac{2}{14}", "0.142857"]), ("\\sqrt{5}", ["2.236", "5^{1/2}"])]
    results = score_answers(groups, timeout_s=5.0)
    assert results[0] == (True, [True, True, True, False])
    assert results[1] == (True, [False, True])
    assert pool.gold_parses - before <= 2 * pool.n_workers


# -------------------------------------------------------------------------- timeouts and recovery
TIMEOUT_S = 0.5
ADVERSARIAL = [
    ("power tower", "9^{9^{9^9}}"),
    ("deep left", "\\left(" * 40 + "x" + "\\right)" * 40),
    ("division by zero", "\\frac{1}{0}"),
    ("invalid latex", "\\frac{\\sqrt{}{{]]\\begin{pmatrix}"),
    ("unicode and NUL", "∑∫√½ 😀 \x00 \u202e ÷ 3"),
    ("huge factorial", "1000000000!"),
    ("huge integer", "9" * 5000),
]


@pytest.mark.parametrize("name,pred", ADVERSARIAL, ids=[a for a, _ in ADVERSARIAL])
def test_adversarial_answers_return_in_time(pool, name, pred):
    start = time.monotonic()
    verdict = is_equivalent(pred, "2", timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert verdict is False
    assert elapsed <= TIMEOUT_S + 0.2, f"{name}: {elapsed:.3f} s"


RUNAWAY = [
    "1," * 500_000,  # the last-number fallback reads a 1 MB "number"
    "the answer is " + "a " * 500_000,
    "\\boxed" * 150_000,
    "\\boxed{" * 140_000,  # 140,000 unclosed boxes: brace matching must stay linear
    "final answer is " * 60_000,
    "<answer>" * 120_000 + "</answer>",
    " " * 1_000_000 + "x",
    "1" * 30_000,  # longer than int() converts by default
    "$\n" * 20_000,  # wrappers are peeled in whole runs, not one "$" per round
    "$1$, " * 5_000,  # one answer of at most 64 joined spans
    "\\(" * 20_000 + "\\boxed{" * 1_000,
    "\\boxed{1} and " * 20_000,
]


@pytest.mark.parametrize("text", RUNAWAY, ids=range(len(RUNAWAY)))
def test_runaway_completions_are_scored_in_time(pool, text):
    for name in ("math", "gsm8k", "format"):
        v = get_verifier(name, **({"timeout_s": TIMEOUT_S} if name == "math" else {}))
        start = time.monotonic()
        scores = v(prompts=["p"], completions=[text], answer=["2"])
        assert time.monotonic() - start <= TIMEOUT_S + 0.2, name
        assert scores == [0.0] and v.stats["errors"] == 0, name


def test_adversarial_gold_in_time_and_unparsable_gold_is_none(pool):
    v = get_verifier("math", timeout_s=TIMEOUT_S)
    start = time.monotonic()
    scores = v(prompts=["p"] * 2, completions=["\\boxed{2}", "\\boxed{3}"], answer=["9^{9^{9^9}}"] * 2)
    assert time.monotonic() - start <= TIMEOUT_S + 0.2
    assert scores == [0.0, 0.0]
    assert v.stats["timeouts"] + v.stats["incorrect"] == 2
    # a gold math-verify cannot parse at all is unscorable (None), and counted
    assert v(prompts=["p"], completions=["\\boxed{2}"], answer=["}{"]) == [None]
    assert v.stats["gold_unparsable"] == 1 and v.stats["unscorable"] == 1


def test_one_megabyte_completion(pool):
    v = get_verifier("math", timeout_s=TIMEOUT_S)
    big = ("lorem ipsum 3.5 \\frac{ " * 45_000)[:1_000_000] + " so the answer is \\boxed{\\frac{7}{2}}"
    assert len(big) > 1_000_000
    start = time.monotonic()
    assert v(prompts=["p", "p"], completions=[big, "x" * 1_000_000], answer=["3.5", "3.5"]) == [1.0, 0.0]
    assert time.monotonic() - start <= TIMEOUT_S + 0.2


def test_hung_item_scores_zero_is_counted_and_pool_recovers(pool):
    v = get_verifier("math", timeout_s=TIMEOUT_S)
    completions = ["\\boxed{9^{9^{9^9}}}", "\\boxed{\\frac{4}{2}}", "\\boxed{3}", "\\boxed{\\sqrt{4}}"]
    start = time.monotonic()
    scores = v(prompts=["p"] * 4, completions=completions, answer=["2"] * 4)
    assert scores == [0.0, 1.0, 0.0, 1.0]  # the rest of the group is scored after the hung item
    assert time.monotonic() - start <= 2 * TIMEOUT_S + 1.0
    assert v.stats["timeouts"] == 1 and v.stats["correct"] == 2 and v.stats["incorrect"] == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_hard_kill_replaces_the_worker_and_requeues_the_rest(workers):
    # Without the in-worker timer every overrun must end in a SIGKILL from the parent (the path
    # taken in production by work stuck in C code, which ignores signals).
    pool = _math_pool.MathPool(workers=workers, soft_timeout=False)
    try:
        pool.start()
        pids = {w.pid for w in pool._workers}
        preds = ["9^{9^{9^9}}", "\\frac{4}{2}", "(10^{10^7})!", "\\sqrt{4}", "3"]
        start = time.monotonic()
        ((status, verdicts),) = pool.run([("2", preds)], TIMEOUT_S)
        elapsed = time.monotonic() - start
        assert status is True
        assert verdicts == ["timeout", True, "timeout", True, False]
        assert pool.restarts == 2
        assert elapsed <= 2 * (TIMEOUT_S + _math_pool.HARD_KILL_GRACE_S) + 0.5 + 0.3 * workers
        assert len(pool._workers) == workers
        killed = pids - {w.pid for w in pool._workers}
        assert killed  # at least one original worker was replaced ...
        for pid in killed:  # ... and is really gone
            with pytest.raises(ProcessLookupError):
                _wait_gone(pid)
        # the pool keeps working
        assert pool.run([("\\frac{1}{2}", ["0.5", "0.25"])], 5.0) == [(True, [True, False])]
    finally:
        pool.close()


def _wait_gone(pid, patience_s=5.0):
    import os

    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline:
        os.kill(pid, 0)  # raises ProcessLookupError once the zygote has reaped it
        time.sleep(0.02)


def test_workers_have_a_memory_limit(pool):
    limits = open(f"/proc/{pool._workers[0].pid}/limits").read()
    line = next(row for row in limits.splitlines() if row.startswith("Max address space"))
    assert line.split()[3] == str(pool.memory_mb * 1024 * 1024)
    # an answer whose evaluation wants far more memory is scored, not fatal
    assert is_equivalent("\\frac{10^{10^{10}}}{7}", "2", timeout_s=TIMEOUT_S) is False
    assert is_equivalent("\\frac{2}{1}", "2", timeout_s=TIMEOUT_S) is True


def test_works_from_a_non_main_thread(pool):
    out = {}

    def work():
        out["eq"] = is_equivalent("\\sqrt{8}", "2\\sqrt{2}")
        start = time.monotonic()
        out["tower"] = is_equivalent("9^{9^{9^9}}", "1", timeout_s=TIMEOUT_S)
        out["elapsed"] = time.monotonic() - start

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert out["eq"] is True and out["tower"] is False
    assert out["elapsed"] <= 2 * (TIMEOUT_S + 0.2)  # two threads share the pool lock


def test_pool_after_fork_is_not_shared():
    import os

    parent_pool = _math_pool.get_pool()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must build its own pool, not drive the parent's workers
        try:
            ok = _math_pool.get_pool() is not parent_pool and is_equivalent("1/2", "0.5", timeout_s=5.0)
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"
    assert _math_pool.get_pool() is parent_pool
