"""The vllm backend's request mapping and result parsing, with fakes shaped like vLLM's objects.

vLLM itself cannot run here (CUDA only); these fakes mirror ``vllm.SamplingParams`` (keyword
constructor), ``LLM.generate(prompts, sampling_params, use_tqdm=...)`` and ``RequestOutput`` /
``CompletionOutput`` (``index``, ``text``, ``token_ids``, ``finish_reason``).
"""

import os
from dataclasses import dataclass, field

import pytest

from trl_grpo_plus.benchmarks import evaluate
from trl_grpo_plus.benchmarks.generation import (GenerationParams, VLLMBackend, parse_vllm_outputs, sample_seed,
                                                 vllm_requests, vllm_sampling_kwargs)


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@dataclass
class FakeCompletionOutput:
    index: int
    text: str
    token_ids: list
    finish_reason: str = "stop"


@dataclass
class FakeRequestOutput:
    prompt: str
    outputs: list = field(default_factory=list)


class FakeLLM:
    """Answers request ``r`` (token-id prompt, its own SamplingParams) with ``reply(prompt_text, seed)``,
    decoding the ids with ``tokenizer``; records every call."""

    def __init__(self, reply, tokenizer=None):
        self.reply = reply
        self.calls = []
        self.tokenizer = tokenizer

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert isinstance(sampling_params, list) and len(sampling_params) == len(prompts)
        self.calls.append((list(prompts), list(sampling_params)))
        out = []
        for p, sp in zip(prompts, sampling_params):
            assert set(p) == {"prompt_token_ids"} and sp.kwargs["n"] == 1
            text = self.tokenizer.decode(p["prompt_token_ids"]) if self.tokenizer else str(p["prompt_token_ids"])
            reply = self.reply(text, sp.kwargs["seed"])
            out.append(FakeRequestOutput(text, [FakeCompletionOutput(0, reply, list(range(3 + len(reply) % 2)),
                                                                     "length" if "LONG" in reply else "stop")]))
        return out


def test_sampling_kwargs_mapping():
    greedy = GenerationParams(max_new_tokens=100, temperature=0.0, top_p=0.5, stop=("\nQ:",), seed=3)
    assert vllm_sampling_kwargs(greedy) == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 100,
                                            "seed": 3, "stop": ["\nQ:"]}
    sampled = GenerationParams(max_new_tokens=7, temperature=0.7, top_p=0.95, num_samples=4)
    assert vllm_sampling_kwargs(sampled, seed=11) == {"n": 1, "temperature": 0.7, "top_p": 0.95, "max_tokens": 7, "seed": 11}


def test_requests_one_per_sample_with_its_own_seed():
    params = GenerationParams(temperature=1.0, num_samples=3, seed=5)
    prompts, sps = vllm_requests([[1, 2], [7]], [10, 42], params, FakeSamplingParams)
    # request i * n + j = sample j of prompt i, fed as token ids (vLLM adds no BOS to those)
    assert prompts == [{"prompt_token_ids": [1, 2]}] * 3 + [{"prompt_token_ids": [7]}] * 3
    assert [sp.kwargs["seed"] for sp in sps] == [sample_seed(5, 10, j) for j in range(3)] + [sample_seed(5, 42, j) for j in range(3)]
    assert len({sp.kwargs["seed"] for sp in sps}) == 6
    # the seed of (problem 42, sample 1) does not depend on what else is in the request list
    _, alone = vllm_requests([[7]], [42], params, FakeSamplingParams)
    assert alone[1].kwargs["seed"] == sps[4].kwargs["seed"]


def test_parse_groups_requests_and_maps_finish_reason():
    params = GenerationParams(temperature=1.0, num_samples=3)
    llm = FakeLLM(lambda p, seed: f"{p}-{seed % 7}-" + ("LONG" if seed % 2 else ""))
    prompts, sps = vllm_requests([[1], [2]], [0, 1], params, FakeSamplingParams)
    outs = llm.generate(prompts, sps)
    parsed = parse_vllm_outputs(outs, 2, params)
    assert [[s.text for s in g] for g in parsed] == [[o.outputs[0].text for o in outs[i * 3:(i + 1) * 3]] for i in range(2)]
    assert [s.finish_reason for s in parsed[0]] == ["length" if "LONG" in o.outputs[0].text else "stop" for o in outs[:3]]
    with pytest.raises(RuntimeError, match="6 request outputs for 3 prompts x n=3"):
        parse_vllm_outputs(outs, 3, params)


def test_backend_chunks_requests_and_reports_each_chunk():
    from trl_grpo_plus.tiny import build_tokenizer

    tok = build_tokenizer()
    llm = FakeLLM(lambda p, seed: p.upper(), tokenizer=tok)
    be = VLLMBackend(llm=llm, sampling_params_cls=FakeSamplingParams, chunk_size=2)
    seen, finished = [], []
    params = GenerationParams(max_new_tokens=9, stop=("STOP",))
    ids = [tok("x", add_special_tokens=False)["input_ids"], tok("y", add_special_tokens=False)["input_ids"],
           tok("z", add_special_tokens=False)["input_ids"]]
    res = be.generate(ids, params, on_batch=lambda idx, s: seen.append(idx), on_finished=finished.append)
    assert [[p["prompt_token_ids"] for p in c[0]] for c in llm.calls] == [ids[:2], ids[2:]]
    assert llm.calls[0][1][0].kwargs["max_tokens"] == 9 and llm.calls[0][1][0].kwargs["stop"] == ["STOP"]
    assert seen == [[0, 1], [2]] and finished == [0, 1, 2]
    assert [g[0].text for g in res] == ["X", "Y", "Z"]
    assert be.stats.generated_tokens == 12  # 3 + len("X") % 2 token ids per reply


def test_missing_vllm_gives_install_hint():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="trl-grpo-plus\\[vllm\\]"):
            VLLMBackend("some/model")
    else:  # pragma: no cover - only on a CUDA machine with vLLM
        pytest.skip("vLLM is installed")


def test_evaluate_with_vllm_backend_scores_through_the_math_verifier(tmp_path):
    from trl_grpo_plus.tiny import build_tokenizer

    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "subject": "Algebra", "level": 1 + i % 2,
             "unique_id": f"toy/{i}"} for i in range(4)]
    seeds = {sample_seed(0, i, j): j for i in range(4) for j in range(3)}  # seed -> sample index

    # sample 0 right for even i, sample 1 always right, sample 2 always wrong
    def reply(prompt, seed):
        i = int(prompt.split("What is ")[1].split(" ")[0])
        j = seeds[seed]
        good = (j == 0 and i % 2 == 0) or j == 1
        return f"so the answer is $\\boxed{{{2 * i if good else 2 * i + 1}}}$"

    llm = FakeLLM(reply, tokenizer=build_tokenizer())
    s = evaluate("math500", "fake/model", backend="vllm", vllm_llm=llm, rows=rows, num_samples=3,
                 temperature=0.8, output_dir=str(tmp_path), progress=False, return_rows=True,
                 vllm_kwargs={"sampling_params_cls": FakeSamplingParams})
    sp = llm.calls[0][1][0].kwargs
    assert sp["n"] == 1 and sp["temperature"] == 0.8 and sp["max_tokens"] == 1024  # the chat preset's budget
    assert len(llm.calls[0][0]) == 12  # 4 problems x 3 samples, one request each
    assert "<|im_start|>user\nWhat is 0 + 0?" in llm.tokenizer.decode(llm.calls[0][0][0]["prompt_token_ids"])
    assert s["accuracy"] == pytest.approx(0.5)  # sample 0 right for i = 0, 2
    assert s["pass@k"]["1"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3 + 1 / 3) / 4)
    assert s["pass@k"]["3"] == 1.0
    # votes: even i -> {2i: 2, 2i+1: 1} right; odd i -> 3 distinct answers, tie -> sample 0 -> wrong
    assert s["maj@k"]["3"] == pytest.approx(0.5)
    assert s["rows"][0]["answers"] == ["0", "0", "1"]
    assert set(s["by_level"]) == {"1", "2"}
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 4

    # rescoring the stored completions: the same verifier gives the same result in every mode,
    # because every completion has a \\boxed answer; a custom verifier becomes the headline
    from trl_grpo_plus.benchmarks import rescore

    again = rescore(str(tmp_path), str(tmp_path / "again"), headline="flexible")
    assert again["accuracy"] == pytest.approx(0.5) and again["config"]["headline"] == "flexible"
    assert {m: v["accuracy"] for m, v in again["modes"].items()} == pytest.approx({"strict": 0.5, "flexible": 0.5, "deepseek": 0.5})
    zero = rescore(str(tmp_path), str(tmp_path / "zero"), verifier=lambda prompts, completions, **kw: [0.0] * len(completions))
    assert zero["accuracy"] == 0.0 and zero["pass@k"]["3"] == 0.0 and zero["headline"] == "custom"
    assert (tmp_path / "zero" / "results.jsonl").read_text().count("\n") == 4
    assert (tmp_path / "zero" / "prompts.jsonl").read_text() == (tmp_path / "prompts.jsonl").read_text()
    assert any(f.startswith("results_") for f in os.listdir(tmp_path / "zero" / "fake__model"))
