"""Real data through the sandbox pool and the isolated judge: HumanEval (164), the MBPP test split (task
ids 11-510) and MBPP-sanitized (427).

One batch per dataset through `run_many`, so both cores are used. Figures from the development machine
(2 shared cores, bwrap layer, isolated judge): HumanEval 164/164 canonical pass, 164/164 `return None`
bodies fail; MBPP 500/500 at timeout 10 s (task 123 can time out on a loaded machine, see
MBPP_TOO_SLOW); MBPP-sanitized 427/427. No task is unjudgeable in any of the three.
"""

from __future__ import annotations

import json

import pytest

from trl_grpo_plus.rewards.sandbox import probe_isolation, run_many

# MBPP 123 (amicable_numbers_sum): the reference is O(n^2) in pure Python; amicable_numbers_sum(9999)
# alone runs ~50M modulo operations, over 10 s on a busy 2-core machine. A timeout, not a wrong answer.
MBPP_TOO_SLOW = {123}


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def isolated():
    iso = probe_isolation()
    assert iso.layer in ("bwrap", "unshare"), f"no sandbox isolation layer works here: {iso.detail}"
    return iso


def test_humaneval_canonical_pass_and_return_none_fails(shared_data, isolated):
    rows = _rows(shared_data / "code" / "humaneval.jsonl")
    assert len(rows) == 164
    good = [dict(program=r["prompt"] + r["canonical_solution"], tests=r["test"], entry_point=r["entry_point"],
                 timeout_s=10) for r in rows]
    bad = [dict(program=r["prompt"] + "    return None\n", tests=r["test"], entry_point=r["entry_point"],
                timeout_s=10) for r in rows]
    reports = run_many(good + bad, desc="humaneval")
    good_reps, bad_reps = reports[:164], reports[164:]
    failed = [(r["task_id"], rep.status, rep.results[0].error) for r, rep in zip(rows, good_reps) if not rep.passed]
    assert failed == []
    wrongly_passed = [r["task_id"] for r, rep in zip(rows, bad_reps) if rep.passed]
    assert wrongly_passed == []
    # a `return None` body fails by a real assertion/type error inside check(), not by a sandbox failure
    assert {rep.status for rep in bad_reps} <= {"failed", "error"}
    assert all(rep.layer == isolated.layer and rep.judge == "isolated" for rep in reports)
    assert sum(rep.num_unjudgeable for rep in good_reps) == 0


def test_mbpp_test_split_reference_code_passes(shared_data, isolated):
    rows = [r for r in _rows(shared_data / "code" / "mbpp.jsonl") if 11 <= r["task_id"] <= 510]
    assert len(rows) == 500
    jobs = [dict(program=r["code"], tests=r["test_list"], setup_code=r["test_setup_code"], timeout_s=10) for r in rows]
    reports = run_many(jobs, desc="mbpp")
    failed = {r["task_id"]: rep.status for r, rep in zip(rows, reports) if not rep.passed}
    print(f"MBPP 11-510: {500 - len(failed)}/500 reference solutions pass; failures: {failed}")
    assert set(failed) <= MBPP_TOO_SLOW, failed
    assert all(status == "timeout" for status in failed.values())
    assert sum(rep.num_unjudgeable for rep in reports) == 0


def test_mbpp_sanitized_reference_code_passes_with_nothing_unjudgeable(shared_data, isolated):
    with open(shared_data / "code" / "mbpp_sanitized.json") as f:
        rows = json.load(f)
    assert len(rows) == 427
    jobs = [dict(program=r["code"], tests=r["test_list"], setup_code="\n".join(r.get("test_imports") or []),
                 timeout_s=10) for r in rows]
    reports = run_many(jobs, desc="mbpp-sanitized")
    failed = {r["task_id"]: (rep.status, [t.error[:80] for t in rep.results if not t.passed][:1])
              for r, rep in zip(rows, reports) if not rep.passed}
    print(f"MBPP-sanitized: {427 - len(failed)}/427 reference solutions pass; failures: {failed}")
    assert failed == {}
    assert sum(rep.num_unjudgeable for rep in reports) == 0
