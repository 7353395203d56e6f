"""Generation backends: ``hf`` (transformers, batched) and ``vllm`` (``LLM.generate``).

Both take **token ids** (``PromptBuilder.encode``: the preset's BOS rule applied once, so hf and
vLLM are fed the same ids) and return, per prompt, ``n`` :class:`Sample` objects with the completion
text (cut at the preset's stop strings), its generated-token count and why it ended. A plain string
prompt is tokenized without special tokens.

**Seeds.** Sample ``j`` of problem ``p`` is drawn from its own generator seeded with
``sample_seed(seed, p, j)`` (``p`` = the problem's index in the dataset). So a sample depends only
on (seed, problem, sample), not on the batch size, the length-sorted batch it lands in, the number
of processes or a resume. hf: a logits processor draws each row's token from that row's own
``torch.Generator`` (temperature, then top-p, then inverse-CDF sampling with one uniform per step)
and hands greedy decoding a one-hot choice. vLLM: one request per (problem, sample) with
``SamplingParams(n=1, seed=sample_seed(...))``. The two backends use different random streams, so
a seed gives the same samples within a backend, not across them.

``hf``:
  * prompts are sorted by token length and batched (``batch_size`` prompts per ``generate`` call),
    left-padded by hand (the ids are kept exactly as encoded);
  * greedy when ``temperature == 0`` (then ``n`` must be 1), else the seeded sampling above;
  * stop strings go to ``generate(stop_strings=..., tokenizer=...)`` and the text is cut again at the
    earliest stop string afterwards (a stop can end mid-token);
  * ``on_finished(i)`` is called as soon as every sample of prompt ``i`` has ended (EOS or a stop
    string), inside the ``generate`` call: progress moves per problem, not per batch;
  * ``--gguf-file`` loads a GGUF checkpoint (dequantized) through ``from_pretrained(gguf_file=...)``;
  * data parallelism is done by the runner (each process a shard), not here.

``vllm`` (lazy import; vLLM is CUDA-only and was **not run** in this repository's CI):
  * one ``LLM(model, tensor_parallel_size=..., dtype=..., seed=...)``;
  * ``LLM.generate([{"prompt_token_ids": ids}, ...], [SamplingParams(n=1, temperature=T, top_p=...,
    max_tokens=..., stop=[...], seed=...), ...])`` over chunks of ``chunk_size`` problems; token-id
    prompts mean vLLM adds no BOS of its own;
  * each request's ``outputs[0]`` (``text``, ``token_ids``, ``finish_reason``) becomes a Sample.
"""

from __future__ import annotations

import hashlib
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


def _check_gguf(model_id: str, gguf_file: str | None) -> dict:
    if gguf_file and os.path.isabs(gguf_file) and not os.path.isdir(model_id):
        raise ValueError(f"--gguf-file {gguf_file!r} is absolute: pass the folder as --model and the file name as --gguf-file.")
    return {"gguf_file": gguf_file} if gguf_file else {}


def load_tokenizer(model_id: str, *, gguf_file: str | None = None):
    """``AutoTokenizer`` of a hub id or folder (``gguf_file`` inside it), prepared for batching."""
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(model_id, **_check_gguf(model_id, gguf_file)))


def load_model(model_id: str, tokenizer, *, gguf_file: str | None = None, dtype: str | None = "auto", device: str | None = None):
    """``AutoModelForCausalLM`` in eval mode, its generation config given the tokenizer's pad token."""
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(model_id, **_check_gguf(model_id, gguf_file),
                                                 **({"dtype": torch_dtype} if torch_dtype else {}))
    if device:
        model = model.to(device)
    model.eval()
    prepare_tokenizer(tokenizer, model)
    return model


def load_model_and_tokenizer(model_id: str, *, gguf_file: str | None = None, dtype: str | None = "auto", device: str | None = None):
    """``load_tokenizer`` then ``load_model``: in eval mode, with left padding and a pad token (EOS
    when the tokenizer has none)."""
    tokenizer = load_tokenizer(model_id, gguf_file=gguf_file)
    return load_model(model_id, tokenizer, gguf_file=gguf_file, dtype=dtype, device=device), tokenizer


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
# seeds


def sample_seed(seed: int, problem: int, sample: int) -> int:
    """The seed of sample ``sample`` of problem ``problem`` (its dataset index): 63 bits of
    ``sha256("seed:problem:sample")``, so neighbouring triples give unrelated streams."""
    digest = hashlib.sha256(f"{int(seed)}:{int(problem)}:{int(sample)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _prompt_ids(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Token ids of each prompt: id lists as given, strings without special tokens."""
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(list(tokenizer(p, add_special_tokens=False)["input_ids"]))
        else:
            out.append([int(t) for t in p])
    return out


# --------------------------------------------------------------------------------------------------
# hf backend


class SeededRowSampler:
    """A logits processor that samples each row from its own ``torch.Generator``.

    ``scores [R, V] -> [R, V]`` with 0 at the drawn token and -inf elsewhere, so greedy decoding
    picks exactly the drawn token. Per row and step: ``p = softmax(scores / T)``; top-p keeps the
    smallest most-probable set whose mass reaches ``top_p`` (the first token always); one uniform
    ``u`` from the row's generator picks the token at ``u`` on the kept tokens' CDF."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float() / self.temperature  # [R, V]
        probs = torch.softmax(logits, dim=-1)  # [R, V]
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)  # [R, V]
        if self.top_p < 1.0:
            before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly above each token  [R, V]
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
        cdf = torch.cumsum(sorted_p, dim=-1)  # [R, V]
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])  # [R]
        target = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)  # [R, 1]
        pos = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)  # [R, 1]
        token = order.gather(-1, pos)  # [R, 1]
        out = torch.full_like(scores, float("-inf"))  # [R, V]
        return out.scatter_(-1, token, 0.0)


class FinishWatcher:
    """A stopping criterion that stops nothing: it reports when every row of a prompt has ended
    (an EOS token, or a stop string in the last ``window`` generated tokens)."""

    window = 24

    def __init__(self, prompt_len: int, n: int, eos: set[int], stop: Sequence[str], tokenizer,
                 on_finished: Callable[[int], None]):
        self.prompt_len, self.n, self.eos, self.stop = prompt_len, n, eos, tuple(stop)
        self.tokenizer, self.on_finished = tokenizer, on_finished
        self.ended: set[int] = set()
        self.reported: set[int] = set()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        rows = input_ids.shape[0]
        if input_ids.shape[1] > self.prompt_len:
            for r in range(rows):
                if r in self.ended:
                    continue
                last = int(input_ids[r, -1])
                if last in self.eos:
                    self.ended.add(r)
                elif self.stop:
                    tail = self.tokenizer.decode(input_ids[r, max(self.prompt_len, input_ids.shape[1] - self.window):],
                                                 skip_special_tokens=True)
                    if any(s in tail for s in self.stop):
                        self.ended.add(r)
            for b in range(rows // self.n):
                if b not in self.reported and all(b * self.n + j in self.ended for j in range(self.n)):
                    self.reported.add(b)
                    self.on_finished(b)
        return torch.zeros(rows, dtype=torch.bool, device=input_ids.device)


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

    def batches(self, prompts: Sequence) -> list[list[int]]:
        """Prompt indices grouped into batches of similar token length (longest first)."""
        lengths = [len(ids) for ids in _prompt_ids(self.tokenizer, prompts)]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def generate_batch(self, prompts: Sequence, params: GenerationParams, keys: Sequence[int] | None = None,
                       on_finished: Callable[[int], None] | None = None) -> list[list[Sample]]:
        """One ``model.generate`` call over ``prompts`` (token ids or strings); ``keys[b]`` is prompt
        ``b``'s problem index for the seeds; returns ``n`` samples per prompt."""
        import torch

        ids = _prompt_ids(self.tokenizer, prompts)
        keys = list(range(len(ids))) if keys is None else list(keys)
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], dtype=torch.long)  # [B, P]
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], dtype=torch.long)  # [B, P]
        device = getattr(self.model, "device", None) or next(self.model.parameters()).device
        n = params.num_samples
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=pad, use_cache=True,
                      do_sample=False, temperature=None, top_p=None, top_k=None)
        if n > 1:  # row b * n + j is sample j of prompt b
            input_ids = input_ids.repeat_interleave(n, dim=0)  # [B*n, P]
            attention = attention.repeat_interleave(n, dim=0)  # [B*n, P]
        if params.temperature > 0:
            from transformers import LogitsProcessorList

            seeds = [sample_seed(params.seed, k, j) for k in keys for j in range(n)]  # row b*n + j
            kwargs["logits_processor"] = LogitsProcessorList([SeededRowSampler(seeds, params.temperature, params.top_p)])
        eos = eos_ids(self.model, self.tokenizer)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        if on_finished is not None:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [FinishWatcher(width, n, eos, params.stop, self.tokenizer, on_finished)])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)  # [B*n, P + T]
        self.stats.seconds += time.perf_counter() - t0
        new = out[:, width:]  # [B*n, T]
        samples: list[list[Sample]] = []
        for b in range(len(ids)):
            group = []
            for j in range(n):
                row = new[b * n + j].tolist()  # [T]
                text, real, reason = self._decode(row, eos, params)
                self.stats.generated_tokens += real
                group.append(Sample(text=text, num_tokens=real, finish_reason=reason))
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

    def generate(self, prompts: Sequence, params: GenerationParams,
                 on_batch: Callable[[list[int], list[list[Sample]]], None] | None = None,
                 keys: Sequence[int] | None = None,
                 on_finished: Callable[[int], None] | None = None) -> list[list[Sample]]:
        """All prompts, batched by length. ``keys[i]``: prompt ``i``'s problem index (seeds; default
        ``i``). ``on_finished(i)`` when prompt ``i``'s samples have all ended; ``on_batch(indices,
        samples)`` after each batch."""
        keys = list(range(len(prompts))) if keys is None else list(keys)
        results: list[list[Sample] | None] = [None] * len(prompts)
        for idx in self.batches(prompts):
            hook = None if on_finished is None else (lambda b, idx=idx: on_finished(idx[b]))
            got = self.generate_batch([prompts[i] for i in idx], params, [keys[i] for i in idx], hook)
            for i, s in zip(idx, got):
                results[i] = s
            if on_batch is not None:
                on_batch(idx, got)
        return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# vllm backend


def vllm_sampling_kwargs(params: GenerationParams, seed: int | None = None) -> dict:
    """Keyword arguments for one request's ``vllm.SamplingParams``: ``n=1`` (one request per
    sample) and the request's own ``seed`` (default ``params.seed``)."""
    kw = dict(n=1, temperature=params.temperature, max_tokens=params.max_new_tokens,
              seed=params.seed if seed is None else seed)
    kw["top_p"] = params.top_p if params.temperature > 0 else 1.0
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def vllm_requests(prompt_ids: Sequence[Sequence[int]], keys: Sequence[int], params: GenerationParams,
                  sampling_params_cls) -> tuple[list[dict], list]:
    """``(prompts, sampling_params)`` for ``LLM.generate``: for each prompt and each sample ``j``,
    ``{"prompt_token_ids": ids}`` and a ``SamplingParams`` with ``seed=sample_seed(seed, key, j)``
    (greedy: one request per prompt). Request ``i * n + j`` is sample ``j`` of prompt ``i``."""
    prompts, sps = [], []
    for ids, key in zip(prompt_ids, keys):
        for j in range(params.num_samples):
            prompts.append({"prompt_token_ids": [int(t) for t in ids]})
            sps.append(sampling_params_cls(**vllm_sampling_kwargs(params, sample_seed(params.seed, key, j))))
    return prompts, sps


def parse_vllm_outputs(outputs, num_prompts: int, params: GenerationParams) -> list[list[Sample]]:
    """``RequestOutput`` list (request ``i * n + j`` = sample ``j`` of prompt ``i``) -> ``n`` Samples
    per prompt. Checks the shape."""
    outputs = list(outputs)
    n = params.num_samples
    if len(outputs) != num_prompts * n:
        raise RuntimeError(f"vLLM returned {len(outputs)} request outputs for {num_prompts} prompts x n={n} requests.")
    result = []
    for i in range(num_prompts):
        group = []
        for j in range(n):
            comps = list(outputs[i * n + j].outputs)
            if len(comps) != 1:
                raise RuntimeError(f"vLLM returned {len(comps)} completions for request {i * n + j}, expected 1.")
            c = comps[0]
            reason = "length" if getattr(c, "finish_reason", None) == "length" else "stop"
            text = truncate_at_stop(c.text, params.stop)  # vLLM already cuts; cheap safety
            group.append(Sample(text=text, num_tokens=len(c.token_ids), finish_reason=reason))
        result.append(group)
    return result


class VLLMBackend:
    """``vllm.LLM`` generation. ``llm=`` injects a ready object (or a fake in tests)."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, llm=None, tensor_parallel_size: int = 1, dtype: str = "auto",
                 seed: int = 0, gguf_file: str | None = None, sampling_params_cls=None, chunk_size: int = 64,
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

    def generate(self, prompts: Sequence, params: GenerationParams, on_batch=None, keys: Sequence[int] | None = None,
                 on_finished: Callable[[int], None] | None = None) -> list[list[Sample]]:
        """``LLM.generate`` over ``chunk_size`` prompts at a time (vLLM batches inside a chunk);
        ``on_finished(i)`` for each prompt of a chunk, then ``on_batch(indices, samples)``, after
        each chunk, so results are saved as they come."""
        if self.sampling_params_cls is None:
            from vllm import SamplingParams

            self.sampling_params_cls = SamplingParams
        keys = list(range(len(prompts))) if keys is None else list(keys)
        if any(isinstance(p, str) for p in prompts):
            prompt_ids = _prompt_ids(self.llm.get_tokenizer(), prompts)
        else:
            prompt_ids = [list(p) for p in prompts]
        result: list[list[Sample]] = []
        for start in range(0, len(prompts), self.chunk_size):
            stop = min(start + self.chunk_size, len(prompts))
            reqs, sps = vllm_requests(prompt_ids[start:stop], keys[start:stop], params, self.sampling_params_cls)
            t0 = time.perf_counter()
            outputs = self.llm.generate(reqs, sps, use_tqdm=False)
            self.stats.seconds += time.perf_counter() - t0
            got = parse_vllm_outputs(outputs, stop - start, params)
            self.stats.generated_tokens += sum(s.num_tokens for g in got for s in g)
            result.extend(got)
            if on_finished is not None:
                for i in range(start, stop):
                    on_finished(i)
            if on_batch is not None:
                on_batch(list(range(start, stop)), got)
        return result
