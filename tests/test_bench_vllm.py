"""The vllm backend's request mapping and result parsing, with fakes shaped like vLLM's objects.

vLLM itself cannot run here (CUDA only); these fakes mirror ``vllm.SamplingParams`` (keyword
constructor), ``LLM.generate(prompts, sampling_params, use_tqdm=...)`` and ``RequestOutput`` /
``CompletionOutput`` (``index``, ``text``, ``token_ids``, ``finish_reason``).
"""

from dataclasses import dataclass, field

import pytest

from trl_grpo_plus.benchmarks import evaluate
from trl_grpo_plus.benchmarks.generation import GenerationParams, VLLMBackend, parse_vllm_outputs, vllm_sampling_kwargs


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
    """Answers each prompt with ``reply(prompt, j)``; returns completions in reverse index order
    (vLLM does not promise order), and records every call."""

    def __init__(self, reply, tokenizer=None):
        self.reply = reply
        self.calls = []
        self.tokenizer = tokenizer

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((list(prompts), sampling_params))
        n = sampling_params.kwargs["n"]
        out = []
        for p in prompts:
            comps = [FakeCompletionOutput(j, self.reply(p, j), list(range(3 + j)),
                                          "length" if j == 1 else "stop") for j in range(n)]
            out.append(FakeRequestOutput(p, comps[::-1]))
        return out


def test_sampling_kwargs_mapping():
    greedy = GenerationParams(max_new_tokens=100, temperature=0.0, top_p=0.5, stop=("\nQ:",), seed=3)
    assert vllm_sampling_kwargs(greedy) == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 100,
                                            "seed": 3, "stop": ["\nQ:"]}
    sampled = GenerationParams(max_new_tokens=7, temperature=0.7, top_p=0.95, num_samples=4)
    assert vllm_sampling_kwargs(sampled) == {"n": 4, "temperature": 0.7, "top_p": 0.95, "max_tokens": 7, "seed": 0}


def test_parse_sorts_by_index_and_maps_finish_reason():
    params = GenerationParams(temperature=1.0, num_samples=3)
    llm = FakeLLM(lambda p, j: f"{p}-{j}")
    outs = llm.generate(["a", "b"], FakeSamplingParams(**vllm_sampling_kwargs(params)))
    parsed = parse_vllm_outputs(outs, 2, params)
    assert [[s.text for s in g] for g in parsed] == [["a-0", "a-1", "a-2"], ["b-0", "b-1", "b-2"]]
    assert [s.num_tokens for s in parsed[0]] == [3, 4, 5]
    assert [s.finish_reason for s in parsed[0]] == ["stop", "length", "stop"]
    with pytest.raises(RuntimeError, match="3 completions for prompt 0, expected n=2"):
        parse_vllm_outputs(outs, 2, GenerationParams(temperature=1.0, num_samples=2))
    with pytest.raises(RuntimeError, match="2 request outputs for 3 prompts"):
        parse_vllm_outputs(outs, 3, params)


def test_backend_chunks_requests_and_reports_each_chunk():
    llm = FakeLLM(lambda p, j: p.upper())
    be = VLLMBackend(llm=llm, sampling_params_cls=FakeSamplingParams, chunk_size=2)
    seen = []
    params = GenerationParams(max_new_tokens=9, stop=("STOP",))
    res = be.generate(["x", "y", "z"], params, on_batch=lambda idx, s: seen.append(idx))
    assert [c[0] for c in llm.calls] == [["x", "y"], ["z"]]
    assert llm.calls[0][1].kwargs["max_tokens"] == 9 and llm.calls[0][1].kwargs["stop"] == ["STOP"]
    assert seen == [[0, 1], [2]]
    assert [g[0].text for g in res] == ["X", "Y", "Z"]
    assert be.stats.generated_tokens == 9  # 3 token ids each


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

    # sample 0 right for even i, sample 1 always right, sample 2 always wrong
    def reply(prompt, j):
        i = int(prompt.split("What is ")[1].split(" ")[0])
        good = (j == 0 and i % 2 == 0) or j == 1
        return f"so the answer is $\\boxed{{{2 * i if good else 2 * i + 1}}}$"

    llm = FakeLLM(reply, tokenizer=build_tokenizer())
    s = evaluate("math500", "fake/model", backend="vllm", vllm_llm=llm, rows=rows, num_samples=3,
                 temperature=0.8, output_dir=str(tmp_path), progress=False, return_rows=True,
                 vllm_kwargs={"sampling_params_cls": FakeSamplingParams})
    sp = llm.calls[0][1].kwargs
    assert sp["n"] == 3 and sp["temperature"] == 0.8 and sp["max_tokens"] == 512
    assert "<|im_start|>user\nWhat is 0 + 0?" in llm.calls[0][0][0]  # chat preset via the LLM's tokenizer
    assert s["accuracy"] == pytest.approx(0.5)  # sample 0 right for i = 0, 2
    assert s["pass@k"]["1"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3 + 1 / 3) / 4)
    assert s["pass@k"]["3"] == 1.0
    # votes: even i -> {2i: 2, 2i+1: 1} right; odd i -> 3 distinct answers, tie -> sample 0 -> wrong
    assert s["maj@k"]["3"] == pytest.approx(0.5)
    assert s["rows"][0]["answers"] == ["0", "0", "1"]
    assert set(s["by_level"]) == {"1", "2"}
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 4

    # rescoring the stored completions: the same verifier gives the same result, a strict one
    # (no last-number fallback) agrees here because every completion has a \\boxed answer
    from trl_grpo_plus.benchmarks import rescore

    strict = rescore(str(tmp_path), str(tmp_path / "strict"), verifier_options={"fallback_last_number": False})
    assert strict["accuracy"] == pytest.approx(0.5) and strict["config"]["verifier_options"] == {"fallback_last_number": False}
    zero = rescore(str(tmp_path), str(tmp_path / "zero"), verifier=lambda prompts, completions, **kw: [0.0] * len(completions))
    assert zero["accuracy"] == 0.0 and zero["pass@k"]["3"] == 0.0
    assert (tmp_path / "zero" / "results.jsonl").read_text().count("\n") == 4
