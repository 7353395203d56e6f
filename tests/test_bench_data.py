"""Benchmark datasets: gold extraction per dataset, bad input, hub sources (prompts: test_bench_presets.py)."""

import json

import pytest

from trl_grpo_plus.benchmarks.cli import main as cli_main
from trl_grpo_plus.benchmarks.datasets import (
    BenchmarkDataError,
    Example,
    gsm8k_gold,
    gsm8k_rationale,
    last_boxed,
    load_examples,
    parse_level,
)

# Our own toy rows in each source format (not copied from the public datasets).
GSM8K_ROWS = [
    {"question": "Ann has 3 pens and buys 4 more. How many pens?", "answer": "3 + 4 = <<3+4=7>>7 pens.\n#### 7"},
    {"question": "A box holds 1,200 nails; 200 are used. How many remain?",
     "answer": "1,200 - 200 = <<1200-200=1000>>1,000\nSo 1,000 remain.\n#### 1,000"},
]
HENDRYCKS_ROW = {"problem": "Compute $\\frac{2}{4}$.", "level": "Level 2", "type": "Prealgebra",
                 "solution": "We have $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."}
MATH500_ROW = {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2",
               "subject": "Algebra", "level": 1, "unique_id": "test/algebra/0.json"}


# ------------------------------------------------------------------------------ gold extraction


def test_gsm8k_gold_and_rationale():
    assert gsm8k_gold(GSM8K_ROWS[0]["answer"]) == "7"
    assert gsm8k_gold(GSM8K_ROWS[1]["answer"]) == "1000"  # commas removed
    assert gsm8k_gold("a #### 3 then #### -4") == "-4"  # the LAST ####
    assert gsm8k_rationale(GSM8K_ROWS[1]["answer"]) == "1,200 - 200 = 1,000 So 1,000 remain."
    with pytest.raises(BenchmarkDataError, match="####"):
        gsm8k_gold("no marker here")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{5}$", "5"),
        ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last one, nested braces
        ("\\fbox{x^{2}}", "x^{2}"),
        ("answer $\\boxed 7$.", "7"),  # brace-less form up to the next $
        ("\\boxed{2} and \\boxed{3", "2"),  # an unbalanced last box falls back to the previous
        ("nothing boxed", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_parse_level():
    assert [parse_level(v) for v in (3, "3", "Level 4", "Level ?", None)] == [3, 3, 4, None, None]


def test_gold_extraction_per_format():
    g = load_examples("gsm8k", rows=GSM8K_ROWS)
    assert [e.gold for e in g] == ["7", "1000"] and [e.id for e in g] == ["gsm8k-0", "gsm8k-1"]
    h = load_examples("math", rows=[HENDRYCKS_ROW])[0]  # hub MATH: no 'answer', 'type', "Level N"
    assert (h.gold, h.subject, h.level, h.id) == ("\\frac{1}{2}", "Prealgebra", 2, "math-0")
    m = load_examples("math500", rows=[MATH500_ROW])[0]
    assert (m.gold, m.subject, m.level, m.id) == ("2", "Algebra", 1, "test/algebra/0.json")


def test_shared_data_gold_extraction(shared_data):
    gsm = load_examples("gsm8k", data_file=shared_data / "gsm8k" / "test.jsonl")
    assert len(gsm) == 1319
    assert all(e.gold.lstrip("-").replace(".", "").isdigit() for e in gsm)
    raw = [json.loads(line) for line in open(shared_data / "gsm8k" / "test.jsonl")]
    assert [e.gold for e in gsm[:50]] == [r["answer"].split("####")[-1].strip().replace(",", "") for r in raw[:50]]

    m500 = load_examples("math500", data_file=shared_data / "math" / "math500_test.jsonl")
    raw = [json.loads(line) for line in open(shared_data / "math" / "math500_test.jsonl")]
    assert len(m500) == 500 and [e.gold for e in m500] == [r["answer"] for r in raw]
    # the gold we would derive from the solution (hub full-MATH path) agrees with 'answer' on all 500
    assert all(last_boxed(r["solution"]) == r["answer"] for r in raw)
    assert {e.level for e in m500} == {1, 2, 3, 4, 5} and len({e.subject for e in m500}) == 7

    full = load_examples("math", data_file=shared_data / "math" / "math_test_full.jsonl")
    assert len(full) == 5000 and len({e.id for e in full}) == 5000
    assert sum(e.subject == "Algebra" for e in full) == 1187


# ------------------------------------------------------------------------------ bad input


def test_missing_field_names_field_and_fix():
    with pytest.raises(BenchmarkDataError, match=r"row 1 has no field 'question'.*fields: \['answer', 'q'\]"):
        load_examples("gsm8k", rows=[GSM8K_ROWS[0], {"q": "x", "answer": "#### 1"}])
    with pytest.raises(BenchmarkDataError, match="neither 'answer' nor 'solution'"):
        load_examples("math", rows=[{"problem": "x"}])
    with pytest.raises(BenchmarkDataError, match="no \\\\boxed"):
        load_examples("math", rows=[{"problem": "x", "solution": "no box"}])


def test_empty_dataset(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(BenchmarkDataError, match="empty"):
        load_examples("gsm8k", data_file=empty)
    with pytest.raises(BenchmarkDataError, match="does not exist"):
        load_examples("gsm8k", data_file=tmp_path / "missing.jsonl")
    with pytest.raises(BenchmarkDataError, match="limit must be a positive"):
        load_examples("gsm8k", rows=GSM8K_ROWS, limit=0)


def test_unknown_benchmark_and_bad_json(tmp_path, capsys):
    with pytest.raises(BenchmarkDataError, match="Unknown benchmark 'gsm9k'.*gsm8k, math, math500"):
        load_examples("gsm9k", rows=GSM8K_ROWS)
    assert cli_main(["gsm9k", "--model", "x", "--output", str(tmp_path)]) == 2
    assert "unknown benchmark 'gsm9k'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GSM8K_ROWS[0]) + "\n{not json\n")
    with pytest.raises(BenchmarkDataError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples("gsm8k", data_file=bad)


def test_cli_reports_data_errors_cleanly(tmp_path, capsys):
    bad = tmp_path / "rows.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}) + "\n")
    code = cli_main(["gsm8k", "--model", "unused", "--data-file", str(bad), "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no field 'question'" in err and "Traceback" not in err


def test_duplicate_ids_rejected():
    with pytest.raises(BenchmarkDataError, match="duplicate id 'a'"):
        load_examples("math500", rows=[dict(MATH500_ROW, unique_id="a"), dict(MATH500_ROW, unique_id="a")])


def test_example_is_hashable_and_frozen():
    e = Example(id="a", question="q", gold="1")
    with pytest.raises(Exception):
        e.gold = "2"  # type: ignore[misc]


# ------------------------------------------------------------------------------ hub sources


def test_hub_ids_configs_and_splits(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "openai/gsm8k":
            return GSM8K_ROWS
        if path == "HuggingFaceH4/MATH-500":
            return [MATH500_ROW]
        return [dict(HENDRYCKS_ROW, type=name)]  # one row per subject config

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert [e.gold for e in load_examples("gsm8k")] == ["7", "1000"]
    assert calls == [("openai/gsm8k", "main", "test")]
    calls.clear()
    assert load_examples("math500")[0].id == "test/algebra/0.json"
    assert calls == [("HuggingFaceH4/MATH-500", None, "test")]
    calls.clear()
    full = load_examples("math")
    assert [c[0] for c in calls] == ["EleutherAI/hendrycks_math"] * 7 and {c[2] for c in calls} == {"test"}
    assert [e.subject for e in full][:2] == ["algebra", "counting_and_probability"] and len(full) == 7


def test_hub_failure_says_use_data_file(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkDataError, match="openai/gsm8k.*--data-file"):
        load_examples("gsm8k")
