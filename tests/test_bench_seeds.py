"""Seeds per (seed, problem, sample) on both backends, the seeded sampler's math, and per-problem progress."""

import math

import pytest
import torch

from trl_grpo_plus.benchmarks import evaluate
from trl_grpo_plus.benchmarks.generation import FinishWatcher, GenerationParams, HFBackend, SeededRowSampler, sample_seed


def toy_rows(n):
    return [{"question": f"Tom has {i} apples" + " and pears" * (i % 3) + f" and gets {i + 3} more. How many now?",
             "answer": f"x\n#### {2 * i + 3}"} for i in range(n)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def completions(tiny, rows, **kw):
    model, tok = tiny
    s = evaluate("gsm8k", model, tok, rows=rows, prompt="chat", max_new_tokens=8, temperature=1.0, num_samples=3,
                 progress=False, return_rows=True, **kw)
    return {r["id"]: r["completions"] for r in s["rows"]}


def test_hf_samples_depend_only_on_seed_problem_and_sample(tiny, tmp_path):
    rows = toy_rows(5)
    by_one = completions(tiny, rows, batch_size=1)
    by_four = completions(tiny, rows, batch_size=4)
    assert by_one == by_four  # batch size and the length-sorted batch a problem lands in do not matter
    assert any(len(set(c)) > 1 for c in by_one.values())  # samples of one problem differ from each other
    assert completions(tiny, rows, batch_size=2, seed=1) != by_one  # the seed matters
    # a resume (or another process's shard) generates a subset: the same samples for the same problems
    out = tmp_path / "out"
    model, tok = tiny
    kw = dict(prompt="chat", max_new_tokens=8, temperature=1.0, num_samples=3, progress=False, output_dir=str(out))
    evaluate("gsm8k", model, tok, rows=rows, limit=2, batch_size=3, **kw)
    s = evaluate("gsm8k", model, tok, rows=rows, batch_size=2, return_rows=True, **kw)
    assert {r["id"]: r["completions"] for r in s["rows"]} == by_one
    # the backend directly: problem 3 alone, keyed by its dataset index
    backend = HFBackend(model, tok, batch_size=1)
    from trl_grpo_plus.benchmarks.prompts import build_prompts

    b = build_prompts("gsm8k", "chat")
    ids = b.encode(b.render(rows[3]["question"], tok), tok)
    alone = backend.generate([ids], GenerationParams(max_new_tokens=8, temperature=1.0, num_samples=3), keys=[3])
    assert [x.text for x in alone[0]] == by_one["gsm8k-3"]


def test_sample_seed_is_a_pure_function_of_the_triple():
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1)
    assert len({sample_seed(s, p, j) for s in range(3) for p in range(20) for j in range(4)}) == 240
    assert 0 <= sample_seed(2**40, 10**6, 7) < 2**63


def test_seeded_sampler_draws_from_the_top_p_distribution():
    # p = softmax(log [0.5, 0.3, 0.2]) = [0.5, 0.3, 0.2]; top_p 0.6 keeps tokens 0 and 1
    # (mass above token 1 is 0.5 < 0.6, above token 2 is 0.8 >= 0.6): renormalized [0.625, 0.375, 0]
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(4000, 1)  # [4000, 3]
    sampler = SeededRowSampler(range(4000), temperature=1.0, top_p=0.6)
    out = sampler(None, logits)  # [4000, 3], 0 at the drawn token, -inf elsewhere
    assert torch.all((out == 0).sum(-1) == 1) and torch.all(torch.isinf(out).sum(-1) == 2)
    drawn = out.argmax(-1)
    counts = torch.bincount(drawn, minlength=3).tolist()
    assert counts[2] == 0
    assert abs(counts[0] / 4000 - 0.625) < 4 * math.sqrt(0.625 * 0.375 / 4000)
    # the same seed draws the same token whatever the other rows are
    again = SeededRowSampler([7], temperature=1.0, top_p=0.6)(None, logits[:1]).argmax(-1)
    assert again.item() == drawn[7].item()
    # temperature: T -> 0 concentrates on the argmax
    cold = SeededRowSampler(range(200), temperature=1e-4, top_p=1.0)(None, logits[:200]).argmax(-1)
    assert torch.all(cold == 0)


def test_finish_watcher_reports_each_prompt_when_all_its_samples_ended():
    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(96 + int(i)) for i in ids)  # 1 -> "a", 2 -> "b", ...

    done = []
    w = FinishWatcher(prompt_len=1, n=2, eos={9}, stop=("bc",), tokenizer=Tok(), on_finished=done.append)
    # prompts 0 (rows 0, 1) and 1 (rows 2, 3); row 0 ends by EOS at step 1, row 1 by the stop "bc" at step 2,
    # row 2 never ends, row 3 by EOS at step 2
    steps = [[[0, 9], [0, 2], [0, 1], [0, 1]],
             [[0, 9, 0], [0, 2, 3], [0, 1, 1], [0, 1, 9]]]
    w(torch.tensor(steps[0]), None)
    assert done == []
    assert w(torch.tensor(steps[1]), None).tolist() == [False] * 4  # it stops nothing itself
    assert done == [0]


def test_progress_callback_once_per_problem(tiny):
    model, tok = tiny
    seen = []
    evaluate("gsm8k", model, tok, rows=toy_rows(5), prompt="chat", max_new_tokens=4, batch_size=4, progress=False,
             progress_callback=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_hf_backend_reports_problems_inside_a_batch(tiny):
    model, tok = tiny
    events = []
    # greedy, the tiny model repeats its prompt's last character: "yy" and "zzz" hit their stop at
    # the first step, "x" runs to max_new_tokens
    params = GenerationParams(max_new_tokens=40, stop=("y", "z"))
    HFBackend(model, tok, batch_size=3).generate(["x", "yy", "zzz"], params, on_batch=lambda idx, s: events.append("batch"),
                                                 on_finished=lambda i: events.append(i))
    assert sorted(events[:2]) == [1, 2] and events[2:] == ["batch"]  # reported as they finished, inside the batch
