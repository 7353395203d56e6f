"""End-to-end runs on the tiny offline model: batching, in-process API, kill-and-resume, two processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from trl_grpo_plus.benchmarks import evaluate
from trl_grpo_plus.benchmarks.generation import GenerationParams, HFBackend
from trl_grpo_plus.benchmarks.runner import append_rows, read_results, repair_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_gsm8k_rows(n):
    return [{"question": f"Tom has {i} apples and gets {i + 3} more. How many now?",
             "answer": f"{i} + {i + 3} = <<{i}+{i + 3}={2 * i + 3}>>{2 * i + 3}\n#### {2 * i + 3}"} for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tok


def test_batched_left_padded_greedy_matches_one_by_one(tiny):
    model, tok = tiny
    prompts = ["Q: 1?", "Question: What is 12 + 7? The", "a", "Solve 3 * 4 - 5. The answer is 7. ####"]
    params = GenerationParams(max_new_tokens=12)
    batched = HFBackend(model, tok, batch_size=4).generate(prompts, params)
    single = HFBackend(model, tok, batch_size=1).generate(prompts, params)
    assert [g[0].text for g in batched] == [g[0].text for g in single]
    assert all(len(g) == 1 for g in batched)
    # batches group prompts by token length, longest first
    be = HFBackend(model, tok, batch_size=2)
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = [i for b in be.batches(prompts) for i in b]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)


def test_sampling_returns_n_samples_and_stops_at_stop_strings(tiny):
    model, tok = tiny
    params = GenerationParams(max_new_tokens=10, temperature=1.0, num_samples=3, stop=("e",))
    out = HFBackend(model, tok, batch_size=2).generate(["x", "yy", "zzz"], params)
    assert [len(g) for g in out] == [3, 3, 3]
    for g in out:
        for s in g:
            assert "e" not in s.text
            assert 1 <= s.num_tokens <= 10
    with pytest.raises(ValueError, match="temperature=0"):
        GenerationParams(temperature=0.0, num_samples=2)


def test_evaluate_in_process_with_model_object(tiny, tmp_path):
    model, tok = tiny
    # a verifier that knows the answers: the metric plumbing is what is tested here
    rows = toy_gsm8k_rows(5)
    s = evaluate("gsm8k", model, tok, rows=rows, max_new_tokens=6, batch_size=2, output_dir=str(tmp_path),
                 progress=False, return_rows=True)
    assert s["num_problems"] == 5 and s["num_samples"] == 1
    # the random tiny model answers nothing right through the real gsm8k verifier
    assert s["accuracy"] == 0.0 and s["correct"] == 0
    assert [r["gold"] for r in s["rows"]] == ["3", "5", "7", "9", "11"]
    assert s["throughput"]["generated_tokens_this_run"] == sum(r["num_tokens"][0] for r in s["rows"])
    for name in ("results.jsonl", "summary.json", "report.md", "plot.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "summary.json").read_text())["num_problems"] == 5
    assert "| accuracy (top-1, strict), 0/5 |" in (tmp_path / "report.md").read_text()
    # a second call resumes: nothing left to generate, same summary
    s2 = evaluate("gsm8k", model, tok, rows=rows, max_new_tokens=6, batch_size=2, output_dir=str(tmp_path), progress=False)
    # (nothing generated: the throughput record of the run that generated the rows is kept)
    assert s2["throughput"] == s["throughput"] and s2["num_problems"] == 5
    # different settings in the same directory are refused
    with pytest.raises(ValueError, match="max_new_tokens: 6 -> 7"):
        evaluate("gsm8k", model, tok, rows=rows, max_new_tokens=7, output_dir=str(tmp_path), progress=False)


def test_evaluate_scores_correct_answers_with_the_real_verifier(tiny):
    model, tok = tiny

    rows = toy_gsm8k_rows(4)
    golds = {r["question"]: r["answer"].split("#### ")[1] for r in rows}
    orig = HFBackend.generate_batch

    # replace generation only: the gold (or a wrong number) comes back as the completion
    def fake_generate_batch(self, prompts, params, keys=None, on_finished=None):
        from trl_grpo_plus.benchmarks.generation import Sample

        out = []
        for p in (tok.decode(ids) for ids in prompts):
            q = next(q for q in golds if q in p)
            ans = golds[q] if int(golds[q]) % 4 == 3 else "0"
            out.append([Sample(text=f"So the answer is \\boxed{{{ans}}}.", num_tokens=5, finish_reason="stop")])
        return out

    HFBackend.generate_batch = fake_generate_batch
    try:
        s = evaluate("gsm8k", model, tok, rows=rows, progress=False)
    finally:
        HFBackend.generate_batch = orig
    # golds 3, 5, 7, 9 -> answered right when gold % 4 == 3: 3 and 7
    assert s["correct"] == 2 and s["accuracy"] == 0.5


def test_repair_results_cuts_torn_tail(tmp_path):
    path = str(tmp_path / "results.jsonl")
    append_rows(path, [{"id": "a"}, {"id": "b"}])
    with open(path, "a") as fh:
        fh.write('{"id": "c", "scor')  # SIGKILL mid-write
    assert repair_results(path) == len('{"id": "c", "scor')
    assert [r["id"] for r in read_results(path)] == ["a", "b"]
    with open(path, "a") as fh:
        fh.write("not json\n")
    repair_results(path)
    assert [r["id"] for r in read_results(path)] == ["a", "b"]


def _cli(model_dir, data, out, limit, extra=()):
    return [sys.executable, "-m", "trl_grpo_plus.cli", "eval", "gsm8k", "--model", model_dir, "--backend", "hf",
            "--prompt", "chat", "--num-samples", "1", "--temperature", "0", "--limit", str(limit), "--data-file", data,
            "--output", out, "--batch-size", "1", "--max-new-tokens", "32", "--no-progress", *extra]


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigkill_then_resume_gives_every_id_exactly_once(tiny_model_dir, tmp_path):
    data = tmp_path / "toy.jsonl"
    n = 24
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_gsm8k_rows(n)))
    out = tmp_path / "out"
    results = out / "results.jsonl"
    proc = subprocess.Popen(_cli(tiny_model_dir, str(data), str(out), n), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(read_results(str(results)))
    assert 3 <= before < n, "the kill must land mid-run"
    with open(results, "a") as fh:  # and a torn last line, as a kill inside write() leaves
        fh.write('{"id": "gsm8k-999", "sco')

    done = subprocess.run(_cli(tiny_model_dir, str(data), str(out), n), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = [r["id"] for r in read_results(str(results))]
    assert sorted(ids) == sorted(f"gsm8k-{i}" for i in range(n))  # each exactly once, none lost
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_problems"] == n
    assert summary["throughput"]["problems_generated_this_run"] == n - before  # only the missing ones


@pytest.mark.slow
def test_two_processes_shard_and_gather(tiny_model_dir, tmp_path):
    data = tmp_path / "toy.jsonl"
    n = 6
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_gsm8k_rows(n)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trl_grpo_plus.cli", *_cli(tiny_model_dir, str(data), str(out), n)[3:]]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"rc={done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    rows = read_results(str(out / "results.jsonl"))
    assert sorted(r["id"] for r in rows) == sorted(f"gsm8k-{i}" for i in range(n))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["throughput"]["processes"] == 2
    assert summary["throughput"]["problems_generated_this_run"] == n
    assert summary["num_problems"] == n


def test_model_object_gets_its_mode_and_padding_side_back(tiny):
    model, tok = tiny
    model.train()
    tok.padding_side = "right"
    try:
        evaluate("gsm8k", model, tok, rows=toy_gsm8k_rows(2), max_new_tokens=3, progress=False)
        assert model.training and tok.padding_side == "right"
    finally:
        model.eval()
        tok.padding_side = "left"


def test_fewshot_preset_end_to_end(tiny, tmp_path):
    model, tok = tiny
    shots = tmp_path / "shots.jsonl"
    shots.write_text("".join(json.dumps(r) + "\n" for r in toy_gsm8k_rows(10)[5:]))
    s = evaluate("gsm8k", model, tok, rows=toy_gsm8k_rows(3), prompt="fewshot", fewshot_file=str(shots), num_fewshot=2,
                 max_new_tokens=4, progress=False, return_rows=True)
    assert s["config"]["num_fewshot"] == 2 and s["config"]["stop"] == ["\nQ:"]
    assert s["config"]["prompt"] == "deepseek-fewshot"  # "fewshot" is its alias
    assert all("\nQ:" not in r["completions"][0] for r in s["rows"])
