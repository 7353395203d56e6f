"""The evaluation loop: load -> render -> generate -> score -> append -> summarize.

``evaluate(...)`` is the Python API (the CLI is a thin wrapper). It accepts a model id / folder, or an
already-loaded model object plus its tokenizer (for in-training callbacks), and rows, a data file, or
the hub dataset.

Output directory (when ``output_dir`` is given):

* ``config.json``: the settings that determine the results (benchmark, model, prompt, sampling...).
  Resuming with different settings is refused unless ``overwrite=True`` (which starts afresh).
* ``results.jsonl``: one row per *problem* (all ``n`` samples of it), appended and flushed + fsynced
  as soon as the problem is scored. On start, a partial last line (a SIGKILL during a write) is cut
  off, rows already present are skipped, and only missing ids are generated. Rows whose id is not in
  the current dataset selection are kept in the file but left out of the metrics. So a killed run,
  re-run with the same command, ends with every id exactly once.
* ``summary.json``, ``report.md`` and ``plot.png`` (written by rank 0 at the end).

Data parallelism (``hf`` backend): under ``accelerate launch`` / ``torchrun`` every process takes the
pending problems ``pending[rank::world_size]``, appends its rows to the same ``results.jsonl`` (one
``write`` per row under an exclusive ``flock``), then the new rows are gathered to rank 0 with
``accelerate.utils.gather_object``. Every process must call ``evaluate``; all return the summary.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from typing import Callable, Iterable, Sequence

from .datasets import BenchmarkDataError, Example, get_spec, load_examples, load_fewshot
from .generation import GenerationParams, HFBackend, VLLMBackend, load_model_and_tokenizer
from .metrics import as_correct, breakdown, summarize
from .prompts import build_preset
from .scoring import Scorer

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = {"gsm8k": 384, "math": 512, "math500": 512}
RESULTS = "results.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
# settings that change the results: a resume with any of them different is refused
_CONFIG_KEYS = ("benchmark", "model", "gguf_file", "prompt", "num_samples", "temperature", "top_p",
                "max_new_tokens", "num_fewshot", "fewshot_file", "seed", "data_file", "verifier_options")


# --------------------------------------------------------------------------------------------------
# results file


def repair_results(path: str) -> int:
    """Cut a partial last line (no trailing newline, or not valid JSON) off ``path``; returns the
    number of bytes removed."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb+") as fh:
        data = fh.read()
        keep = data.rfind(b"\n") + 1  # end of the last complete line
        # a complete line that is not valid JSON (torn write) goes too, with everything after it
        good = 0
        for line in data[:keep].splitlines(keepends=True):
            try:
                json.loads(line)
            except ValueError:
                if line.strip():
                    break
            good += len(line)
        if good < len(data):
            fh.truncate(good)
        return len(data) - good


def read_results(path: str) -> list[dict]:
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        break  # torn tail; repair_results removes it on the next start
    return rows


def append_rows(path: str, rows: Sequence[dict]) -> None:
    """Append rows, each as one line in one ``write`` under an exclusive lock, then fsync."""
    if not rows:
        return
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _check_config(output_dir: str, config: dict, overwrite: bool) -> None:
    path = os.path.join(output_dir, CONFIG)
    if os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        diff = {k: (old.get(k), config.get(k)) for k in _CONFIG_KEYS if old.get(k) != config.get(k)}
        if diff:
            lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise BenchmarkDataError(
                f"{output_dir} holds results of a different run ({lines}). Use another --output directory, "
                "or pass --overwrite to discard them."
            )
    if overwrite:
        for name in (RESULTS, SUMMARY):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)


# --------------------------------------------------------------------------------------------------
# distributed helpers


class _Dist:
    """Process index / count and collectives; a single process needs no accelerate state."""

    def __init__(self, enabled: bool | None):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        if enabled or (enabled is None and world > 1):
            import torch
            from accelerate import PartialState

            # without an accelerator, accelerate picks MULTI_CPU (gloo) only when told cpu=True;
            # otherwise a torchrun launch on CPU silently becomes N independent single processes
            self.state = PartialState(cpu=not torch.cuda.is_available())
            if world > 1 and self.state.num_processes != world:
                raise RuntimeError(
                    f"WORLD_SIZE={world} but accelerate started {self.state.num_processes} process group(s) "
                    f"({self.state.distributed_type}). Launch with torchrun or `accelerate launch --multi_gpu`."
                )
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1

    @property
    def device(self):
        return self.state.device if self.state else None

    def barrier(self):
        if self.state and self.world > 1:
            self.state.wait_for_everyone()

    def gather(self, items: list) -> list:
        if not self.state or self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def broadcast(self, obj):
        if not self.state or self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        broadcast_object_list(box, from_process=0)
        return box[0]


# --------------------------------------------------------------------------------------------------
# the API


def evaluate(
    benchmark: str,
    model=None,
    tokenizer=None,
    *,
    gguf_file: str | None = None,
    backend: str = "hf",
    prompt: str = "chat",
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int | None = None,
    batch_size: int = 16,
    limit: int | None = None,
    data_file: str | None = None,
    rows: Iterable[dict] | None = None,
    to_example: Callable[[dict, int], Example] | None = None,
    fewshot_file: str | None = None,
    num_fewshot: int | None = None,
    fewshot_examples: Sequence[Example] | None = None,
    output_dir: str | None = None,
    overwrite: bool = False,
    dtype: str = "auto",
    seed: int = 0,
    ks: Sequence[int] | None = None,
    verifier: Callable | None = None,
    verifier_options: dict | None = None,
    tensor_parallel_size: int = 1,
    vllm_llm=None,
    vllm_kwargs: dict | None = None,
    distributed: bool | None = None,
    progress: bool = True,
    return_rows: bool = False,
) -> dict:
    """Run ``benchmark`` (``gsm8k``, ``math`` or ``math500``) and return the summary dict.

    ``model``: a hub id / folder (str) or a loaded ``PreTrainedModel`` (then pass ``tokenizer``).
    ``rows`` / ``data_file`` / hub: where problems come from (``to_example(row, index) -> Example``
    maps custom rows). ``fewshot_examples`` / ``fewshot_file`` / the train split: exemplars for
    ``prompt="fewshot"``. ``verifier``: a TRL reward function to score with instead of the registry's.
    ``vllm_llm``: a ready ``vllm.LLM``; ``vllm_kwargs``: more ``VLLMBackend`` / ``vllm.LLM`` keyword
    arguments (``chunk_size``, ``gpu_memory_utilization``, ...).
    ``output_dir=None`` keeps everything in memory (no files, no resume).
    With ``return_rows=True`` the summary has a ``"rows"`` list of the per-problem results.
    """
    spec = get_spec(benchmark)
    if backend not in ("hf", "vllm"):
        raise BenchmarkDataError(f"Unknown backend {backend!r}. Choose hf or vllm.")
    if model is None:
        raise BenchmarkDataError("evaluate() needs model= (a hub id, a local folder, or a loaded model object).")
    if max_new_tokens is None:
        max_new_tokens = DEFAULT_MAX_NEW_TOKENS[benchmark]
    dist = _Dist(distributed)

    examples = load_examples(benchmark, data_file=data_file, rows=rows, limit=limit, to_example=to_example)
    if prompt == "fewshot":
        k = spec.default_fewshot_k if num_fewshot is None else num_fewshot
        shots = list(fewshot_examples) if fewshot_examples is not None else load_fewshot(benchmark, k, fewshot_file=fewshot_file)
        num_fewshot = len(shots)
    else:
        shots, num_fewshot = [], 0
    preset = build_preset(benchmark, prompt, shots)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              num_samples=num_samples, stop=preset.stop, seed=seed)
    scorer = Scorer(benchmark, verifier=verifier, verifier_options=verifier_options)

    model_name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", type(model).__name__)
    config = {"benchmark": benchmark, "model": model_name, "gguf_file": gguf_file, "prompt": prompt,
              "num_samples": num_samples, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
              "max_new_tokens": max_new_tokens, "num_fewshot": num_fewshot, "fewshot_file": fewshot_file,
              "seed": seed, "data_file": os.path.abspath(data_file) if data_file else None,
              "backend": backend, "dtype": dtype, "batch_size": batch_size, "stop": list(preset.stop),
              "verifier": scorer.verifier_name, "verifier_options": dict(verifier_options) if verifier_options else None, "limit": limit}

    results_path = None
    done: dict[str, dict] = {}
    if output_dir:
        results_path = os.path.join(output_dir, RESULTS)
        if dist.rank == 0:
            os.makedirs(output_dir, exist_ok=True)
            _check_config(output_dir, config, overwrite)
            cut = repair_results(results_path)
            if cut:
                logger.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", results_path, cut)
        dist.barrier()
        wanted = {ex.id for ex in examples}
        for r in read_results(results_path):
            if r.get("id") in wanted:
                done.setdefault(r["id"], r)
    pending = [ex for ex in examples if ex.id not in done]
    shard = pending[dist.rank :: dist.world]

    # ---- generation backend
    saved_padding = None
    if backend == "hf":
        if isinstance(model, str):
            model_obj, tok = load_model_and_tokenizer(model, gguf_file=gguf_file, dtype=dtype,
                                                      device=str(dist.device) if dist.device is not None else None)
        else:
            if tokenizer is None:
                raise BenchmarkDataError("evaluate(model=<model object>) also needs tokenizer=.")
            model_obj, tok = model, tokenizer
            saved_padding = tokenizer.padding_side
        gen = HFBackend(model_obj, tok, batch_size=batch_size)
    else:
        tok = tokenizer
        gen = VLLMBackend(model if isinstance(model, str) else None, llm=vllm_llm, tensor_parallel_size=tensor_parallel_size,
                          dtype=dtype, seed=seed, gguf_file=gguf_file, **(vllm_kwargs or {}))
        if tok is None and prompt == "chat":
            tok = gen.llm.get_tokenizer()

    prompts = [preset.render(ex.question, tok) for ex in shard]

    # ---- generate + score + append, batch by batch
    new_rows: list[dict] = []
    correct_so_far = [sum(as_correct(r["scores"][0]) for r in done.values()), len(done)]
    bar = None
    if progress and dist.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(examples), initial=len(done), desc=f"{benchmark} ({prompt})", unit="problem",
                   dynamic_ncols=True)
        if done:
            bar.set_postfix(acc=f"{correct_so_far[0] / max(1, correct_so_far[1]):.3f}")

    def on_batch(indices: list[int], samples) -> None:
        batch_rows = []
        for i, group in zip(indices, samples):
            ex = shard[i]
            texts = [s.text for s in group]
            scores, answers = scorer.score(ex, prompts[i], texts)
            row = {"id": ex.id, "gold": ex.gold, "scores": scores, "answers": answers,
                   "correct": as_correct(scores[0]) == 1.0, "completions": texts,
                   "num_tokens": [s.num_tokens for s in group], "finish_reasons": [s.finish_reason for s in group],
                   "question": ex.question}
            if ex.subject is not None:
                row["subject"] = ex.subject
            if ex.level is not None:
                row["level"] = ex.level
            batch_rows.append(row)
        if results_path:
            append_rows(results_path, batch_rows)
        new_rows.extend(batch_rows)
        correct_so_far[0] += sum(as_correct(r["scores"][0]) for r in batch_rows)
        correct_so_far[1] += len(batch_rows)
        if bar is not None:
            # rank 0 only sees its own shard between gathers; the bar advances by world_size per row
            bar.update(len(batch_rows) * dist.world)
            bar.set_postfix(acc=f"{correct_so_far[0] / max(1, correct_so_far[1]):.3f}",
                            tok_s=f"{gen.stats.tokens_per_second:.0f}")

    # a model handed in by the caller (e.g. mid-training) goes back to its mode and padding side
    hf_model = getattr(gen, "model", None)
    was_training = bool(getattr(hf_model, "training", False))
    t0 = time.perf_counter()
    try:
        if hf_model is not None:
            hf_model.eval()
        if shard:
            gen.generate(prompts, params, on_batch=on_batch)
    finally:
        if was_training:
            hf_model.train()
        if saved_padding is not None:
            tok.padding_side = saved_padding
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    # ---- gather
    gathered = dist.gather(new_rows)
    stats = dist.gather([{"rank": dist.rank, "generated_tokens": gen.stats.generated_tokens,
                          "generate_seconds": gen.stats.seconds, "wall_seconds": wall, "problems": len(new_rows)}])
    summary = None
    if dist.rank == 0:
        by_id = dict(done)
        for r in gathered:
            by_id.setdefault(r["id"], r)
        ordered = [by_id[ex.id] for ex in examples if ex.id in by_id]
        missing = [ex.id for ex in examples if ex.id not in by_id]
        if missing:
            raise RuntimeError(f"{len(missing)} problems have no result after generation (first: {missing[:3]}).")
        summary = build_summary(benchmark, ordered, config, stats, ks=ks)
        if output_dir:
            from .report import write_outputs

            write_outputs(output_dir, summary, ordered)
        if return_rows:
            summary["rows"] = ordered
    return dist.broadcast(summary)


def build_summary(benchmark: str, rows: Sequence[dict], config: dict, stats: Sequence[dict] = (), *, ks=None) -> dict:
    """Metrics (+ subject/level breakdown for MATH) and throughput of this invocation."""
    summary = {"benchmark": benchmark, "config": config}
    summary.update(summarize(rows, ks=ks))
    if benchmark in ("math", "math500"):
        summary["by_subject"] = breakdown(rows, lambda r: r.get("subject"))
        summary["by_level"] = breakdown(rows, lambda r: r.get("level"))
    tokens = sum(s["generated_tokens"] for s in stats)
    gen_s = max((s["generate_seconds"] for s in stats), default=0.0)
    summary["throughput"] = {
        "problems_generated_this_run": sum(s["problems"] for s in stats),
        "generated_tokens_this_run": tokens,
        "generate_seconds": gen_s,  # slowest process
        "tokens_per_second": tokens / gen_s if gen_s > 0 else None,
        "processes": len(stats) or 1,
    }
    lengths = [t for r in rows for t in r.get("num_tokens", [])]
    reasons = [f for r in rows for f in r.get("finish_reasons", [])]
    if lengths:
        summary["mean_completion_tokens"] = sum(lengths) / len(lengths)
        summary["truncated_fraction"] = sum(f == "length" for f in reasons) / len(reasons) if reasons else None
    return summary


def rescore(src_dir: str, dst_dir: str | None = None, *, verifier_options: dict | None = None,
            verifier: Callable | None = None, ks: Sequence[int] | None = None) -> dict:
    """Score the completions stored in ``src_dir/results.jsonl`` again, without generating, e.g.
    with other verifier options or after a verifier fix. Writes a complete output directory to
    ``dst_dir`` (default: ``src_dir`` + ``-rescored``) and returns its summary."""
    with open(os.path.join(src_dir, CONFIG), encoding="utf-8") as fh:
        config = json.load(fh)
    benchmark = config["benchmark"]
    scorer = Scorer(benchmark, verifier=verifier, verifier_options=verifier_options)
    config = dict(config, verifier_options=dict(verifier_options) if verifier_options else None, rescored_from=src_dir)
    rows = []
    for r in read_results(os.path.join(src_dir, RESULTS)):
        ex = Example(id=r["id"], question=r.get("question", ""), gold=r["gold"])
        scores, answers = scorer.score(ex, ex.question, r["completions"])
        rows.append(dict(r, scores=scores, answers=answers, correct=as_correct(scores[0]) == 1.0))
    if not rows:
        raise BenchmarkDataError(f"{src_dir}/{RESULTS} has no rows to rescore.")
    dst_dir = dst_dir or src_dir.rstrip("/") + "-rescored"
    os.makedirs(dst_dir, exist_ok=True)
    with open(os.path.join(dst_dir, CONFIG), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    tmp = os.path.join(dst_dir, RESULTS + ".tmp")
    if os.path.exists(tmp):
        os.remove(tmp)
    append_rows(tmp, rows)
    os.replace(tmp, os.path.join(dst_dir, RESULTS))
    summary = build_summary(benchmark, rows, config, ks=ks)
    from .report import write_outputs

    write_outputs(dst_dir, summary, rows)
    return summary
