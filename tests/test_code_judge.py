"""Hostile programs against the isolated judge (issue 10): one per attack class.

Each attack is a real program run through ``run_tests`` and ``get_verifier("code")``. Where the attack
beats the classic in-process harness (``judge="in_process"``), the test says so first: that proves the
program is a real attack, and that the isolated judge (the default) is what stops it.
"""

from __future__ import annotations

import pytest

from trl_grpo_plus.rewards import get_verifier
from trl_grpo_plus.rewards.sandbox import probe_isolation, run_many, run_tests


@pytest.fixture(scope="module", autouse=True)
def isolated():
    iso = probe_isolation()
    assert iso.layer in ("bwrap", "unshare"), f"no sandbox isolation layer works here: {iso.detail}"
    return iso


# Each attack: a program whose `f` is wrong (the honest answer to every test is 42 or 7), and tests
# that an honest f would pass. The attack makes the classic harness pay anyway.
TESTS = ["assert f(1) == 42", "assert f(2) == 7", "def check(candidate):\n    assert candidate(3) == 42\ncheck(f)"]

ATTACKS = {
    # always-equal values that carry no Python-level __eq__ the in-process eq guard could see
    "eq_is_a_callable_instance": (
        "class Yes:\n    def __call__(self, *args):\n        return True\n"
        "class A:\n    __eq__ = Yes()\n    __ne__ = Yes()\n    __hash__ = None\n"
        "def f(x):\n    return A()\n"),
    "eq_is_a_c_builtin": (
        "import operator\n"
        "class A:\n    __eq__ = id\n    __ne__ = operator.not_\n    __hash__ = None\n"
        "def f(x):\n    return A()\n"),
    "mock_any": "from unittest import mock\ndef f(x):\n    return mock.ANY\n",
    # the program reads the expected value out of the calling test's frame and returns it
    "oracle_from_the_callers_constants": (
        "import sys\n"
        "def f(x):\n"
        "    consts = list(sys._getframe(1).f_code.co_consts)\n"
        "    if x in consts and consts.index(x) + 1 < len(consts):  # `f(1) == 42`: 42 follows 1\n"
        "        return consts[consts.index(x) + 1]\n"
        "    return None\n"),
    # a frame walk to the harness: its record function signs a pass for every test
    "forge_records_from_the_harness_frames": (
        "import sys, os\n"
        "def f(x):\n"
        "    fr = sys._getframe(1)\n"
        "    while fr is not None:\n"
        "        rec, tests = fr.f_locals.get('record'), fr.f_locals.get('tests')\n"
        "        if callable(rec) and tests is not None:\n"
        "            for i in range(len(tests)):\n"
        "                rec('test', i, True, 0.0, '')\n"
        "            rec('done', 0, True, 0.0, '')\n"
        "            sys.stdout.flush()\n"
        "            os._exit(0)\n"
        "        fr = fr.f_back\n"
        "    return None\n"),
    # the same through the heap: find the record closure with gc
    "forge_records_through_gc": (
        "import gc, os, sys\n"
        "def f(x):\n"
        "    for o in gc.get_objects():\n"
        "        if callable(o) and getattr(o, '__name__', '') == 'record' and getattr(o, '__closure__', None):\n"
        "            for i in range(3):\n"
        "                o('test', i, True, 0.0, '')\n"
        "            o('done', 0, True, 0.0, '')\n"
        "            os._exit(0)\n"
        "    return None\n"),
    # a trace function set on the test's frame jumps over the assertion
    "f_trace_jump_over_the_assert": (
        "import sys\n"
        "def f(x):\n"
        "    caller = sys._getframe(1)\n"
        "    def tracer(frame, event, arg):\n"
        "        if event == 'line' and frame is caller:\n"
        "            try:\n"
        "                frame.f_lineno = frame.f_code.co_firstlineno + 1\n"
        "            except ValueError:\n"
        "                pass\n"
        "        return tracer\n"
        "    caller.f_trace = tracer\n"
        "    caller.f_trace_lines = True\n"
        "    sys.settrace(lambda *a: None)\n"
        "    return None\n"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_does_not_pay_with_the_isolated_judge(name):
    program = ATTACKS[name]
    rep = run_tests(program, TESTS, timeout_s=2)
    assert rep.judge == "isolated"
    assert rep.num_passed == 0 and not rep.passed, (name, rep)
    # (the trace function jumps inside the program's own request loop, which then spins until the time limit)
    assert rep.status in ("failed", "unjudgeable", "error", "crashed", "timeout"), (name, rep.status, rep.stderr_tail)
    assert get_verifier("code", binary=True, timeout_s=2).score("```python\n" + program + "```", tests=TESTS) in (0.0, None)


# attacks the in-process harness (even with its eq guard) is known to pay for: proof they are real
IN_PROCESS_HOLES = ["eq_is_a_callable_instance", "eq_is_a_c_builtin", "mock_any",
                    "oracle_from_the_callers_constants", "forge_records_from_the_harness_frames"]


@pytest.mark.parametrize("name", IN_PROCESS_HOLES)
def test_the_same_attack_pays_in_process(name):
    rep = run_tests(ATTACKS[name], TESTS, judge="in_process")
    assert rep.num_passed >= 2, (name, rep)  # documented hole of judge="in_process"


def test_patched_helpers_the_tests_call_do_not_matter():
    # math.isclose / builtins patched by the program, and an object with rigged __sub__/__abs__ for
    # `abs(f(x) - y) < eps`: the judge's math and builtins are its own, and arithmetic with a returned
    # object never happens
    program = (
        "import math, builtins\n"
        "math.isclose = lambda *a, **k: True\n"
        "builtins.abs = lambda x: 0\n"
        "class Z:\n"
        "    def __sub__(self, other):\n        return 0\n"
        "    def __rsub__(self, other):\n        return 0\n"
        "    def __abs__(self):\n        return 0\n"
        "def f(x):\n    return 0.5\n"
        "def g(x):\n    return Z()\n"
    )
    tests = ["import math\nassert math.isclose(f(1), 2.0)", "assert abs(f(1) - 2.0) < 1e-9",
             "assert abs(g(1) - 2.0) < 1e-9"]
    rep = run_tests(program, tests)
    assert rep.num_passed == 0
    assert [r.unjudgeable for r in rep.results] == [False, False, True]
    assert run_tests(program, tests[:1], judge="in_process").num_passed == 1  # the hole it closes


# A scan of the program's whole address space (ctypes, no /proc/self/mem: the job is non-dumpable) for
# NEEDLE_A + NEEDLE_B written next to each other. The program holds the two halves apart and never
# joins them before the scan, so only someone else's copy of the whole needle can be found.
MEMORY_SCAN = (
    "import ctypes\n"
    "def scan(a, b):\n"
    "    a, b = a.encode(), b.encode()\n"
    "    with open('/proc/self/maps') as maps:\n"
    "        regions = [line.split()[:2] + [line] for line in maps]\n"
    "    for addr, perms, line in regions:\n"
    "        if 'r' not in perms or '[v' in line:\n"
    "            continue\n"
    "        lo, hi = (int(x, 16) for x in addr.split('-'))\n"
    "        chunk = ctypes.string_at(lo, min(hi - lo, 64 << 20))\n"
    "        at = chunk.find(a)\n"
    "        while at >= 0:\n"
    "            if chunk[at + len(a):at + len(a) + len(b)] == b:\n"
    "                return 'FOUND'\n"
    "            at = chunk.find(a, at + 1)\n"
    "    return 'clean'\n"
)


def test_expected_values_never_reach_the_program():
    # the expected value, a unique number, sits in the test; the program searches its memory for it
    program = MEMORY_SCAN + "def f(x):\n    return scan('918273645', '546372819')\n"
    tests = ["assert f(1) == 918273645546372819", "assert f(2) == 'clean'"]
    rep = run_tests(program, tests, timeout_s=20)
    assert [r.passed for r in rep.results] == [False, True], rep
    rep = run_tests(program, tests, timeout_s=20, judge="in_process")
    assert not rep.results[1].passed  # in process, the tests are in the program's memory: found


def test_the_memory_scan_finds_what_is_there():
    # the control for the two tests around it: a program that holds the joined needle finds it
    program = MEMORY_SCAN + "HELD = ''.join(['7c1d9e5b', '-answer-'])\ndef f():\n    return scan('7c1d9e5b', '-answer-')\n"
    assert run_tests(program, ["assert f() == 'FOUND'"], timeout_s=20).passed


def test_a_group_mates_output_is_not_in_the_next_jobs_memory():
    # job 1 prints an answer; job 2, on the same worker (the same fork server as root), searches its
    # whole address space for it: a forked job must not inherit an earlier job's buffers
    honest = "print(''.join(['7c1d9e5b', '-answer-']) * 512)\n"
    snoop = MEMORY_SCAN + "def f():\n    return scan('7c1d9e5b', '-answer-')\n"
    for _ in range(3):
        first = run_many([dict(program=honest, tests=[{"input": "", "output": "7c1d9e5b-answer-" * 512}])], workers=1)[0]
        assert first.passed
        rep = run_many([dict(program=snoop, tests=["assert f() == 'clean'"], timeout_s=20)], workers=1)[0]
        assert rep.passed, rep


def test_a_malformed_reply_is_not_judged():
    # the program replaces the harness's encoder with one that sends a forged message; the judge
    # decodes only plain data, so the worst it gets is a value the program could have returned
    program = (
        "import sys\n"
        "h = sys.modules['__main__']\n"
        "real = h.encode_plain\n"
        "def forged(msg, **kw):\n"
        "    if msg and msg[0] == 'ok':\n"
        "        return b'\\x80\\x04pickle-bytes'\n"
        "    return real(msg, **kw)\n"
        "h.encode_plain = forged\n"
        "def f(x):\n    return 42\n"
    )
    rep = run_tests(program, TESTS)
    assert rep.num_passed == 0 and rep.status == "unjudgeable"


def test_honest_programs_that_need_data_proxies_still_pass():
    program = (
        "from collections import Counter, namedtuple, OrderedDict\n"
        "import re\n"
        "Pt = namedtuple('Pt', 'x y')\n"
        "class Node:\n"
        "    def __init__(self, v):\n        self.v = v\n        self.next = None\n"
        "def length(n):\n"
        "    k = 0\n"
        "    while n is not None:\n        k, n = k + 1, n.next\n"
        "    return k\n"
        "def counts(s):\n    return Counter(s)\n"
        "def pt():\n    return Pt(1, 2)\n"
        "def gen(n):\n    yield from range(n)\n"
        "def adder(k):\n    return lambda x: x + k\n"
        "def sort_in_place(xs):\n    xs.sort()\n"
        "def bad(x):\n    raise ValueError('no')\n"
        "def match(s):\n    return re.match('a+', s)\n"
        "LIMIT = 10\n"
    )
    tests = [
        "assert counts('aab') == {'a': 2, 'b': 1}",
        "assert pt() == (1, 2)",  # a namedtuple crosses as its tuple value
        "assert list(gen(3)) == [0, 1, 2]\ng = gen(2)\nassert next(g) == 0 and next(g) == 1",
        "assert adder(2)(3) == 5",
        "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
        "try:\n    bad(1)\nexcept ValueError as e:\n    assert 'no' in str(e)\nelse:\n    raise AssertionError",
        "assert match('aab') and not match('b') and match('aab').group(0) == 'aa'",
        "a = Node(1)\na.next = Node(2)\nassert length(a) == 2",
        "assert LIMIT == 10",
    ]
    rep = run_tests(program, tests)
    assert rep.passed, [(r.index, r.error) for r in rep.results if not r.passed]


def test_unjudgeable_scores_none_or_zero_and_is_counted():
    program = "from dataclasses import dataclass\n@dataclass\nclass P:\n    x: int\ndef f(x):\n    return P(x)\n"
    tests = ["assert f(1) == P(1)"]
    completion = "```python\n" + program + "```"
    v = get_verifier("code")
    assert v(prompts=["p"], completions=[completion], tests=[tests]) == [None]
    assert v.stats["status_unjudgeable"] == 1
    zero = get_verifier("code", on_unjudgeable="zero")
    assert zero(prompts=["p"], completions=[completion], tests=[tests]) == [0.0]
    assert get_verifier("code", judge="in_process", eq_guard=False).score(completion, tests=tests) == 1.0
    with pytest.raises(ValueError, match="on_unjudgeable='maybe'"):
        get_verifier("code", on_unjudgeable="maybe")
    with pytest.raises(ValueError, match="judge='shared'"):
        get_verifier("code", judge="shared")


def test_a_program_that_never_answers_times_out_without_hanging_the_judge():
    program = "def f(x):\n    while True:\n        pass\n"
    rep = run_tests(program, ["assert f(1) == 1", "assert True"], timeout_s=1.5)
    assert rep.status == "timeout" and rep.num_passed == 0


def test_a_program_that_kills_its_own_process_mid_call_is_crashed():
    program = "import os\ndef f(x):\n    os._exit(0)\n"
    rep = run_tests(program, ["assert f(1) == 1", "assert True"])
    assert rep.status == "crashed" and rep.num_passed == 0


def test_a_program_cannot_stand_in_for_the_tests_builtins():
    # `def abs(v): return 0` would receive the test's own `f(x) - expected` and answer "close enough";
    # `all = lambda it: True` would pass every `assert all(...)`; a rigged `max` would compute the
    # expected side. A program function named like a builtin is called only as the test's subject, with
    # literal arguments (MBPP 126 tests its own `sum` that way, and still passes).
    program = (
        "def abs(v):\n    return 0\n"
        "def all(it):\n    return True\n"
        "def sorted(xs, **kw):\n    return [1, 2, 3]\n"
        "def max(xs):\n    return 0.5\n"
        "def f(x):\n    return 0.5\n"
        "def g(x):\n    return [3, 1, 2, 9]\n"
        "def sum(a, b):\n    return a * b\n"
    )
    tests = ["assert abs(f(1) - 2.0) < 1e-9", "assert all(f(x) == 2.0 for x in range(3))",
             "assert sorted(g(1)) == [1, 2, 3]", "assert f(1) == max([1, 2])"]
    rep = run_tests(program, tests + ["assert sum(3, 4) == 12", "assert not sum(0, 5)"])
    assert [r.passed for r in rep.results] == [False] * 4 + [True, True], rep
    assert run_tests(program, tests, judge="in_process").num_passed == 4  # the in-process harness pays


def test_stop_iteration_from_a_call_does_not_end_the_tests_iteration():
    # raised inside map(), StopIteration would end the iteration: all(map(f, xs)) of nothing is True
    program = "def is_prime(n):\n    raise StopIteration\n"
    tests = ["assert all(map(is_prime, [2, 3, 5, 7]))", "assert list(map(is_prime, [2])) == []"]
    rep = run_tests(program, tests)
    assert rep.num_passed == 0 and "StopIteration" in rep.results[0].error, rep
    assert run_tests(program, tests, judge="in_process").num_passed == 2  # the in-process harness pays
