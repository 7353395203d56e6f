"""Generation backends: ``hf`` (transformers, batched) and ``vllm`` (``LLM.generate``).

Both take rendered prompt strings and return, per prompt, ``n`` :class:`Sample` objects with the
completion text (cut at the preset's stop strings), its generated-token count and why it ended.

``hf``:
  * prompts are sorted by token length and batched (``batch_size`` prompts per ``generate`` call),
    with **left padding**, so each batch wastes little compute on padding;
  * greedy when ``temperature == 0`` (then ``n`` must be 1), else sampling with
    ``num_return_sequences=n``, ``temperature`` and ``top_p``;
  * stop strings go to ``generate(stop_strings=..., tokenizer=...)`` and the text is cut again at the
    earliest stop string afterwards (a stop can end mid-token);
  * ``--gguf-file`` loads a GGUF checkpoint (dequantized) through ``from_pretrained(gguf_file=...)``;
  * data parallelism is done by the runner (each process a shard), not here.

``vllm`` (lazy import; vLLM is CUDA-only and was **not run** in this repository's CI):
  * one ``LLM(model, tensor_parallel_size=..., dtype=..., seed=...)``;
  * one ``LLM.generate(prompts, SamplingParams(n=n, temperature=T, top_p=..., max_tokens=...,
    stop=[...], seed=...))`` call over all prompts; vLLM batches internally;
  * each ``RequestOutput.outputs[j]`` (``text``, ``token_ids``, ``finish_reason``) becomes a Sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .prompts import truncate_at_stop


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS or stop string) or "length"


@dataclass
class GenerationParams:
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}.")
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError(
                f"num_samples={self.num_samples} with temperature=0: greedy decoding gives {self.num_samples} "
                "identical samples. Set --temperature > 0 (e.g. 0.7) to sample, or --num-samples 1."
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")


@dataclass
class GenerationStats:
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------
# model loading


def resolve_dtype(dtype: str | None):
    import torch

    if dtype in (None, "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"Unknown dtype {dtype!r}. Choose one of: auto, {', '.join(table)}.")
    return table[dtype]


def load_model_and_tokenizer(model_id: str, *, gguf_file: str | None = None, dtype: str | None = "auto", device: str | None = None):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a hub id or a folder (``gguf_file`` inside it),
    in eval mode, with left padding and a pad token (EOS when the tokenizer has none)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file and os.path.isabs(gguf_file) and not os.path.isdir(model_id):
        raise ValueError(f"--gguf-file {gguf_file!r} is absolute: pass the folder as --model and the file name as --gguf-file.")
    tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
    torch_dtype = resolve_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs, **({"dtype": torch_dtype} if torch_dtype else {}))
    if device:
        model = model.to(device)
    model.eval()
    prepare_tokenizer(tokenizer, model)
    return model, tokenizer


def prepare_tokenizer(tokenizer, model=None):
    """Left padding, and a pad token (EOS when missing), for batched generation."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model, "generation_config", None) is not None:
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for x in (gen_eos, tokenizer.eos_token_id):
        if isinstance(x, int):
            ids.add(x)
        elif isinstance(x, (list, tuple)):
            ids.update(i for i in x if isinstance(i, int))
    return ids


# --------------------------------------------------------------------------------------------------
# hf backend


class HFBackend:
    """Batched transformers generation with left padding (see module docstring)."""

    name = "hf"

    def __init__(self, model, tokenizer, *, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer, model)
        self.batch_size = batch_size
        self.stats = GenerationStats()

    def batches(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt indices grouped into batches of similar token length (longest first)."""
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams) -> list[list[Sample]]:
        """One ``model.generate`` call over ``prompts``; returns ``n`` samples per prompt."""
        import torch

        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        device = getattr(self.model, "device", None) or next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        n = params.num_samples
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, use_cache=True)
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, num_return_sequences=n)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)  # [B*n, P + T]
        self.stats.seconds += time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1] :]  # [B*n, T]
        eos = eos_ids(self.model, self.tokenizer)
        samples: list[list[Sample]] = []
        for b in range(len(prompts)):
            group = []
            for j in range(n):
                ids = new[b * n + j].tolist()  # [T]
                samples_text, real, reason = self._decode(ids, eos, params)
                self.stats.generated_tokens += real
                group.append(Sample(text=samples_text, num_tokens=real, finish_reason=reason))
            samples.append(group)
        return samples

    def _decode(self, ids: list[int], eos: set[int], params: GenerationParams) -> tuple[str, int, str]:
        """(text cut at stops, generated tokens up to and including EOS, finish reason) of one row.

        A row that ends before the others (EOS, or a stop string) is right-filled with the pad token
        by ``generate``; those fill tokens are not counted."""
        real = len(ids)
        ended = False
        for t, tok in enumerate(ids):
            if tok in eos:
                real, ended = t + 1, True
                break
        if not ended:
            pad = self.tokenizer.pad_token_id
            while real > 0 and ids[real - 1] == pad:
                real -= 1
            ended = real < len(ids)
        text = self.tokenizer.decode(ids[:real], skip_special_tokens=True)
        cut = truncate_at_stop(text, params.stop)
        ended = ended or len(cut) < len(text) or real < params.max_new_tokens
        return cut, real, "stop" if ended else "length"

    def generate(self, prompts: Sequence[str], params: GenerationParams,
                 on_batch: Callable[[list[int], list[list[Sample]]], None] | None = None) -> list[list[Sample]]:
        """All prompts, batched by length; ``on_batch(indices, samples)`` after each batch."""
        import torch

        results: list[list[Sample] | None] = [None] * len(prompts)
        for batch_no, idx in enumerate(self.batches(prompts)):
            if params.temperature > 0:
                torch.manual_seed(params.seed + batch_no)
            got = self.generate_batch([prompts[i] for i in idx], params)
            for i, s in zip(idx, got):
                results[i] = s
            if on_batch is not None:
                on_batch(idx, got)
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# vllm backend


def vllm_sampling_kwargs(params: GenerationParams) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` equivalent to ``params``."""
    kw = dict(n=params.num_samples, temperature=params.temperature, max_tokens=params.max_new_tokens, seed=params.seed)
    kw["top_p"] = params.top_p if params.temperature > 0 else 1.0
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def parse_vllm_outputs(outputs, num_prompts: int, params: GenerationParams) -> list[list[Sample]]:
    """``RequestOutput`` list (in prompt order) -> ``n`` Samples per prompt. Checks the shape."""
    outputs = list(outputs)
    if len(outputs) != num_prompts:
        raise RuntimeError(f"vLLM returned {len(outputs)} request outputs for {num_prompts} prompts.")
    result = []
    for i, req in enumerate(outputs):
        comps = list(req.outputs)
        if len(comps) != params.num_samples:
            raise RuntimeError(f"vLLM returned {len(comps)} completions for prompt {i}, expected n={params.num_samples}.")
        comps.sort(key=lambda c: getattr(c, "index", 0))
        group = []
        for c in comps:
            reason = "length" if getattr(c, "finish_reason", None) == "length" else "stop"
            text = truncate_at_stop(c.text, params.stop)  # vLLM already cuts; cheap safety
            group.append(Sample(text=text, num_tokens=len(c.token_ids), finish_reason=reason))
        result.append(group)
    return result


class VLLMBackend:
    """``vllm.LLM`` generation. ``llm=`` injects a ready object (or a fake in tests)."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, llm=None, tensor_parallel_size: int = 1, dtype: str = "auto",
                 seed: int = 0, gguf_file: str | None = None, sampling_params_cls=None, chunk_size: int = 256,
                 **llm_kwargs):
        if llm is None:
            try:
                import vllm
            except ImportError as exc:
                raise ImportError(
                    "--backend vllm needs vLLM (CUDA only): pip install 'trl-grpo-plus[vllm]'. "
                    "On a CPU machine use --backend hf."
                ) from exc
            path = os.path.join(model, gguf_file) if gguf_file else model
            llm = vllm.LLM(model=path, tensor_parallel_size=tensor_parallel_size, dtype=dtype, seed=seed, **llm_kwargs)
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
        self.llm = llm
        self.chunk_size = chunk_size
        self.sampling_params_cls = sampling_params_cls
        self.stats = GenerationStats()

    def generate(self, prompts: Sequence[str], params: GenerationParams, on_batch=None) -> list[list[Sample]]:
        """``LLM.generate`` over ``chunk_size`` prompts at a time (vLLM batches inside a chunk);
        ``on_batch(indices, samples)`` after each chunk, so results are saved as they come."""
        if self.sampling_params_cls is None:
            from vllm import SamplingParams

            self.sampling_params_cls = SamplingParams
        sp = self.sampling_params_cls(**vllm_sampling_kwargs(params))
        result: list[list[Sample]] = []
        for start in range(0, len(prompts), self.chunk_size):
            chunk = list(prompts[start : start + self.chunk_size])
            t0 = time.perf_counter()
            outputs = self.llm.generate(chunk, sp, use_tqdm=False)
            self.stats.seconds += time.perf_counter() - t0
            got = parse_vllm_outputs(outputs, len(chunk), params)
            self.stats.generated_tokens += sum(s.num_tokens for g in got for s in g)
            result.extend(got)
            if on_batch is not None:
                on_batch(list(range(start, start + len(chunk))), got)
        return result
