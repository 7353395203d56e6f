"""Auditable outputs and safe resume, on the tiny offline model saved to a folder."""

import hashlib
import json
import os

import pytest

from trl_grpo_plus.benchmarks import evaluate, runner
from trl_grpo_plus.benchmarks.datasets import BenchmarkDataError
from trl_grpo_plus.benchmarks.runner import read_results


def toy_rows(n):
    # question lengths differ so that length-sorted batches are not in dataset order
    return [{"question": f"Tom has {i} apples" + " and more" * (i % 3) + f" and gets {i + 3} more. How many now?",
             "answer": f"{i} + {i + 3} = {2 * i + 3}\n#### {2 * i + 3}"} for i in range(n)]


@pytest.fixture
def model_dir(tmp_path):
    from trl_grpo_plus.tiny import save_tiny_model

    return save_tiny_model(tmp_path / "model")


@pytest.fixture
def data_file(tmp_path):
    f = tmp_path / "toy.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(5)))
    return str(f)


def run(model, data, out, **kw):
    args = dict(prompt="deepseek-fewshot", num_fewshot=2, max_new_tokens=4, batch_size=2, progress=False)
    args.update(kw)
    return evaluate("gsm8k", model, data_file=data, output_dir=str(out), **args)


def test_outputs_are_auditable(model_dir, data_file, tmp_path):
    out = tmp_path / "out"
    s = run(model_dir, data_file, out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == os.path.abspath(model_dir) and os.path.isabs(cfg["data_file"])
    assert cfg["data_sha256"] == hashlib.sha256(open(data_file, "rb").read()).hexdigest()
    assert cfg["package_versions"]["torch"] and cfg["package_versions"]["transformers"]
    assert "trl-grpo-plus-git" in cfg["package_versions"]
    assert cfg["model_fingerprint"]["kind"] == "folder" and "model.safetensors" in cfg["model_fingerprint"]["weights"]
    assert cfg["protocol"]["exemplar_file_sha256"] and os.path.isabs(cfg["protocol"]["exemplar_file"])
    assert cfg["protocol"]["joiner"] == "\n\n\n" and cfg["stop"] == ["\nQ:"] and cfg["num_fewshot"] == 2
    rows = read_results(str(out / "results.jsonl"))
    assert [r["doc_id"] for r in rows] == [0, 1, 2, 3, 4]  # dataset order, not generation order
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [p["prompt_sha256"] for p in prompts] == [r["prompt_sha256"] for r in rows]
    for p in prompts:
        assert hashlib.sha256(p["prompt"].encode()).hexdigest() == p["prompt_sha256"]
        assert p["prompt"].endswith("\nA:") and p["num_prompt_tokens"] > 0
    assert set(rows[0]["modes"]) == {"strict", "flexible", "deepseek"}
    assert set(s["modes"]) == {"strict", "flexible", "deepseek"}
    # lm-eval's layout: DIR/<model sanitized>/results_<ts>.json + samples_<task>_<ts>.jsonl
    folder = out / os.path.abspath(model_dir).replace("/", "__")
    results = [f for f in os.listdir(folder) if f.startswith("results_")]
    samples = [f for f in os.listdir(folder) if f.startswith("samples_gsm8k_deepseek-fewshot_")]
    assert len(results) == 1 and len(samples) == 1
    doc = json.loads((folder / results[0]).read_text())
    task = doc["results"]["gsm8k_deepseek-fewshot"]
    assert task["exact_match,strict-match"] == s["modes"]["strict"]["accuracy"]
    assert {"exact_match,flexible-extract", "exact_match,deepseek"} <= set(task)
    assert doc["n-shot"]["gsm8k_deepseek-fewshot"] == 2 and doc["config"]["random_seed"] == 0
    lines = [json.loads(line) for line in (folder / samples[0]).read_text().splitlines()]
    assert len(lines) == 5 * 3 and {ln["filter"] for ln in lines} == {"strict-match", "flexible-extract", "deepseek"}
    first = next(ln for ln in lines if ln["doc_id"] == 0)
    assert first["prompt_hash"] == rows[0]["prompt_sha256"] and first["arguments"][0][0] == prompts[0]["prompt"]
    report = (out / "report.md").read_text()
    assert "Scoring modes side by side" in report and "| deepseek |" in report


def test_resume_refuses_new_weights_in_the_same_folder(model_dir, data_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    run(model_dir, data_file, out, limit=2)
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    m.model.embed_tokens.weight.data.mul_(1.5)
    m.save_pretrained(model_dir)  # new weights, same path
    with pytest.raises(BenchmarkDataError, match="model_fingerprint: model.safetensors.*--overwrite"):
        run(model_dir, data_file, out)
    s = run(model_dir, data_file, out, overwrite=True)
    assert s["throughput"]["problems_generated_this_run"] == 5


@pytest.mark.parametrize("change,message", [
    (dict(prompt="lm-eval-gsm8k-cot"), "prompt: \"deepseek-fewshot\" -> \"lm-eval-gsm8k-cot\""),
    (dict(num_fewshot=1), "protocol_sha256"),
    (dict(dtype="bfloat16"), "dtype"),
    (dict(max_new_tokens=5), "max_new_tokens: 4 -> 5"),
    (dict(temperature=0.7), "temperature"),
    (dict(seed=1), "seed: 0 -> 1"),
])
def test_resume_refuses_other_settings(model_dir, data_file, tmp_path, change, message):
    out = tmp_path / "out"
    run(model_dir, data_file, out, limit=2)
    with pytest.raises(BenchmarkDataError, match=message):
        run(model_dir, data_file, out, **change)


def test_resume_accepts_a_trailing_slash_batch_size_and_limit(model_dir, data_file, tmp_path):
    out = tmp_path / "out"
    first = run(model_dir, data_file, out, limit=2, return_rows=True)
    s = run(model_dir + "/", data_file, out, batch_size=3, return_rows=True)
    assert s["throughput"]["problems_generated_this_run"] == 3  # only the missing ones
    assert s["rows"][:2] == first["rows"]


def test_nothing_left_loads_no_model_and_keeps_the_throughput(model_dir, data_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run(model_dir, data_file, out)

    def refuse(*a, **k):
        raise AssertionError("the model must not be loaded when nothing is left to generate")

    monkeypatch.setattr(runner, "load_model", refuse)
    again = run(model_dir, data_file, out)
    assert again["throughput"] == first["throughput"] and again["throughput"]["problems_generated_this_run"] == 5
    assert json.loads((out / "summary.json").read_text())["throughput"] == first["throughput"]


def test_resume_refuses_rows_of_another_prompt_or_gold(model_dir, data_file, tmp_path):
    out = tmp_path / "out"
    run(model_dir, data_file, out, limit=2)
    rows = toy_rows(5)
    rows[1]["question"] = rows[1]["question"].replace("Tom", "Ann")  # same id and gold, another prompt
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BenchmarkDataError, match="'gsm8k-1' was generated from another prompt"):
        run(model_dir, str(other), out)
    rows = toy_rows(5)
    rows[0]["answer"] = rows[0]["answer"].replace("#### 3", "#### 4")
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BenchmarkDataError, match="'gsm8k-0' has gold '3', the data now says '4'"):
        run(model_dir, str(other), out)
