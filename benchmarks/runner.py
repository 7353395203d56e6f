"""The evaluation loop: tokenize -> render -> (load) -> generate -> score -> append -> summarize.

``evaluate(...)`` is the Python API (the CLI is a thin wrapper). It accepts a model id / folder, or an
already-loaded model object plus its tokenizer (for in-training callbacks), and rows, a data file, or
the hub dataset.

Output directory (when ``output_dir`` is given):

* ``config.json``: everything that determines the results, plus what audits them: package versions,
  the data file's absolute path and sha256, the protocol (preset, exemplar file + sha256, the joined
  exemplars' sha256, joiners, stops, BOS rule, chat template sha256), the model's canonical path and
  fingerprint (``audit.py``), decoding settings, seeds.
* ``results.jsonl``: one row per *problem* (all ``n`` samples of it), appended and flushed + fsynced
  as soon as the problem is scored, and rewritten **in dataset order** at the end. Each row has
  ``doc_id`` (the dataset index), ``prompt_sha256``, the headline ``scores``/``answers`` and every
  scoring mode under ``modes``.
* ``prompts.jsonl``: per problem, ``doc_id``, ``id``, ``prompt_sha256``, the rendered ``prompt`` and
  its token count and token-id sha256 (the exact ids fed to the model).
* ``summary.json``, ``report.md``, ``plot.png`` and lm-eval-style ``<model>/results_<ts>.json`` +
  ``<model>/samples_<task>_<ts>.jsonl`` (``lm_eval_format.py``), written by rank 0 at the end.

**Resume.** On start, a partial last line (a SIGKILL during a write) is cut off, rows already present
are skipped, and only missing ids are generated. A resume is refused, naming what differs, unless the
model fingerprint, backend, dtype, preset and protocol hash, stops and decoding settings
(``RESUME_KEYS``) all match and every stored row's gold and prompt hash equal this run's; pass
``overwrite=True`` (``--overwrite``) or another directory to start fresh. ``--model D/`` and
``--model D`` are the same path. The batch size, the number of processes and ``limit`` may change
(samples do not depend on them, see ``generation.py``). When nothing is left to do, the model is not
loaded and the throughput record of the run that generated the rows is kept. Rows whose id is not in
the current selection are kept in the file but left out of the metrics.

**Progress.** ``progress_callback(finished, total)`` is called (rank 0) each time a problem's
samples have all finished generating, inside a batch (hf) or per chunk (vLLM); the tqdm bar
(``progress=True``) is driven by the same events.

Data parallelism (``hf`` backend): under ``accelerate launch`` / ``torchrun`` every process takes the
pending problems ``pending[rank::world_size]``, appends its rows to the same ``results.jsonl`` (one
``write`` per row under an exclusive ``flock``), then the new rows are gathered to rank 0 with
``accelerate.utils.gather_object``. Every process must call ``evaluate``; all return the summary.
The bar on rank 0 counts its own finished problems times the number of processes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from typing import Callable, Iterable, Sequence

from .audit import canonical_model_path, examples_sha256, model_fingerprint, package_versions
from .datasets import BenchmarkDataError, Example, get_spec, load_examples
from .generation import GenerationParams, HFBackend, VLLMBackend, load_model, load_tokenizer
from .metrics import as_correct, breakdown, mode_summary, summarize
from .presets import file_sha256
from .prompts import build_prompts, sha256_text
from .scoring import Scorer

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
PROMPTS = "prompts.jsonl"
#: settings that change the generations or scores: a resume with any of them different is refused
RESUME_KEYS = ("benchmark", "model", "gguf_file", "model_fingerprint", "backend", "dtype", "prompt", "protocol_sha256",
               "stop", "max_new_tokens", "num_samples", "temperature", "top_p", "seed", "verifier_options", "headline")


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


def write_rows_atomically(path: str, rows: Sequence[dict]) -> None:
    """Replace ``path`` with ``rows`` (one JSON line each) through a temporary file + rename."""
    tmp = path + ".tmp"
    if os.path.exists(tmp):
        os.remove(tmp)
    append_rows(tmp, rows)
    os.replace(tmp, path)


def _short(v, limit: int = 160) -> str:
    text = json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _diff_fingerprint(a, b) -> str:
    """The weight files / config that differ between two folder fingerprints, else the short forms."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get("kind") == b.get("kind") == "folder":
        parts = []
        if a.get("config_sha256") != b.get("config_sha256"):
            parts.append("config.json changed")
        wa, wb = a.get("weights", {}), b.get("weights", {})
        for name in sorted(set(wa) | set(wb)):
            if wa.get(name) != wb.get(name):
                parts.append(f"{name}: {_short(wa.get(name), 60)} -> {_short(wb.get(name), 60)}")
        return "; ".join(parts)
    return f"{_short(a)} -> {_short(b)}"


def check_resume(output_dir: str, config: dict, overwrite: bool) -> None:
    """Refuse to resume ``output_dir`` when a ``RESUME_KEYS`` setting differs; then write ``config``."""
    path = os.path.join(output_dir, CONFIG)
    if os.path.exists(path) and not overwrite:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        diff = [k for k in RESUME_KEYS if old.get(k) != config.get(k)]
        if diff:
            lines = "; ".join(
                f"{k}: {_diff_fingerprint(old.get(k), config.get(k))}" if k == "model_fingerprint"
                else f"{k}: {_short(old.get(k))} -> {_short(config.get(k))}" for k in diff)
            raise BenchmarkDataError(
                f"{output_dir} holds results of a different run ({lines}). Resuming would mix them. "
                "Use another --output directory, or pass --overwrite (overwrite=True) to discard them and start fresh."
            )
    if overwrite:
        for name in (RESULTS, SUMMARY, PROMPTS):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)


def check_stored_rows(output_dir: str, done: dict[str, dict], examples: Sequence[Example], prompt_hashes: dict[str, str]) -> None:
    """Every stored row must have this run's gold and prompt hash (the data or template may have
    changed under the same settings)."""
    by_id = {ex.id: ex for ex in examples}
    for rid, row in done.items():
        if str(row.get("gold")) != str(by_id[rid].gold):
            raise BenchmarkDataError(
                f"{output_dir}: stored row {rid!r} has gold {row.get('gold')!r}, the data now says {by_id[rid].gold!r}. "
                "The data file changed; use another --output directory or --overwrite."
            )
        if row.get("prompt_sha256") != prompt_hashes[rid]:
            raise BenchmarkDataError(
                f"{output_dir}: stored row {rid!r} was generated from another prompt (sha256 {str(row.get('prompt_sha256'))[:12]} "
                f"!= {prompt_hashes[rid][:12]}): the question, exemplars or chat template changed. "
                "Use another --output directory or --overwrite."
            )


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


def _chat_template_sha256(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        return None
    return sha256_text(template if isinstance(template, str) else json.dumps(template, sort_keys=True))


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
    fewshot_examples: Sequence[Example | dict] | None = None,
    output_dir: str | None = None,
    overwrite: bool = False,
    dtype: str = "auto",
    seed: int = 0,
    ks: Sequence[int] | None = None,
    verifier: Callable | None = None,
    verifier_options: dict | None = None,
    headline: str = "strict",
    tensor_parallel_size: int = 1,
    vllm_llm=None,
    vllm_kwargs: dict | None = None,
    distributed: bool | None = None,
    progress: bool = True,
    progress_callback: Callable[[int, int], None] | None = None,
    return_rows: bool = False,
) -> dict:
    """Run ``benchmark`` (``gsm8k``, ``math`` or ``math500``) and return the summary dict.

    ``model``: a hub id / folder (str) or a loaded ``PreTrainedModel`` (then pass ``tokenizer``).
    ``prompt``: a preset name (``presets.list_presets()``) or a ``Preset``; ``max_new_tokens=None``
    takes the preset's budget. ``rows`` / ``data_file`` / hub: where problems come from
    (``to_example(row, index) -> Example`` maps custom rows). ``fewshot_examples`` / ``fewshot_file``
    replace the preset's exemplars, ``num_fewshot`` keeps the first k. ``headline``: the scoring mode
    reported as ``accuracy`` (``strict``, ``flexible`` or ``deepseek``; all three are always
    computed). ``verifier``: a TRL reward function to score with (a ``custom`` mode, then the
    headline). ``vllm_llm``: a ready ``vllm.LLM``; ``vllm_kwargs``: more ``VLLMBackend`` /
    ``vllm.LLM`` keyword arguments (``chunk_size``, ``gpu_memory_utilization``, ...).
    ``progress_callback(finished, total)``: called as problems finish (see the module docstring).
    ``output_dir=None`` keeps everything in memory (no files, no resume).
    With ``return_rows=True`` the summary has a ``"rows"`` list of the per-problem results.
    """
    spec = get_spec(benchmark)
    if backend not in ("hf", "vllm"):
        raise BenchmarkDataError(f"Unknown backend {backend!r}. Choose hf or vllm.")
    if model is None:
        raise BenchmarkDataError("evaluate() needs model= (a hub id, a local folder, or a loaded model object).")
    if not isinstance(model, str) and backend == "hf" and tokenizer is None:
        raise BenchmarkDataError("evaluate(model=<model object>) also needs tokenizer=.")
    dist = _Dist(distributed)

    examples = load_examples(benchmark, data_file=data_file, rows=rows, limit=limit, to_example=to_example)
    builder = build_prompts(benchmark, prompt, fewshot=fewshot_examples, fewshot_file=fewshot_file, num_fewshot=num_fewshot)
    if max_new_tokens is None:
        max_new_tokens = builder.max_new_tokens
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              num_samples=num_samples, stop=builder.stop, seed=seed)
    scorer = Scorer(benchmark, fewshot=builder.num_fewshot > 0, headline=headline, verifier=verifier,
                    verifier_options=verifier_options)

    # ---- the tokenizer (cheap) renders every prompt before any model is loaded
    tok = tokenizer
    if tok is None:
        if vllm_llm is not None:
            tok = vllm_llm.get_tokenizer()
        else:
            tok = load_tokenizer(model, gguf_file=gguf_file)
    texts = [builder.render(ex.question, tok) for ex in examples]
    prompt_hashes = {ex.id: sha256_text(t) for ex, t in zip(examples, texts)}
    doc_index = {ex.id: i for i, ex in enumerate(examples)}
    protocol = dict(builder.describe(), chat_template_sha256=_chat_template_sha256(tok) if builder.layout.kind == "chat" else None)

    config = {"benchmark": benchmark, "model": canonical_model_path(model), "gguf_file": gguf_file,
              "model_fingerprint": model_fingerprint(model, gguf_file) if (output_dir or isinstance(model, str)) else None,
              "prompt": builder.name, "protocol": protocol,
              "protocol_sha256": sha256_text(json.dumps(protocol, sort_keys=True) + builder.prefix),
              "num_samples": num_samples, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0,
              "max_new_tokens": max_new_tokens, "num_fewshot": builder.num_fewshot, "fewshot_file": builder.exemplar_file,
              "seed": seed, "data_file": os.path.abspath(data_file) if data_file else None,
              "data_sha256": file_sha256(data_file) if data_file else None, "examples_sha256": examples_sha256(examples),
              "backend": backend, "dtype": dtype, "batch_size": batch_size, "stop": list(builder.stop),
              "verifier": scorer.verifier_name, "verifier_options": dict(verifier_options) if verifier_options else None,
              "headline": scorer.headline, "scoring_modes": scorer.modes, "limit": limit,
              "package_versions": package_versions()}

    results_path = None
    done: dict[str, dict] = {}
    previous_throughput = None
    if output_dir:
        results_path = os.path.join(output_dir, RESULTS)
        if dist.rank == 0:
            os.makedirs(output_dir, exist_ok=True)
            check_resume(output_dir, config, overwrite)
            cut = repair_results(results_path)
            if cut:
                logger.warning("%s: removed a partial last line (%d bytes) left by an interrupted run", results_path, cut)
        dist.barrier()
        for r in read_results(results_path):
            if r.get("id") in doc_index:
                done.setdefault(r["id"], r)
        check_stored_rows(output_dir, done, examples, prompt_hashes)
        summary_path = os.path.join(output_dir, SUMMARY)
        if os.path.exists(summary_path):
            try:
                with open(summary_path, encoding="utf-8") as fh:
                    previous_throughput = json.load(fh).get("throughput")
            except ValueError:
                previous_throughput = None
    pending = [i for i, ex in enumerate(examples) if ex.id not in done]
    shard = pending[dist.rank :: dist.world]

    # ---- progress: one event per finished problem
    total = len(examples)
    finished = [len(done)]
    bar = None
    if progress and dist.rank == 0 and pending:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=len(done), desc=f"{benchmark} ({builder.name})", unit="problem", dynamic_ncols=True)

    def advance() -> None:
        if dist.rank != 0:
            return
        step = min(dist.world, total - finished[0])
        finished[0] += step
        if bar is not None:
            bar.update(step)
        if progress_callback is not None:
            progress_callback(finished[0], total)

    new_rows: list[dict] = []
    gen = None
    wall = 0.0
    if pending:  # ---- generation backend (not loaded when nothing is left)
        saved_padding = getattr(tok, "padding_side", None) if tokenizer is not None else None
        if backend == "hf":
            if isinstance(model, str):
                model_obj = load_model(model, tok, gguf_file=gguf_file, dtype=dtype,
                                       device=str(dist.device) if dist.device is not None else None)
            else:
                model_obj = model
            gen = HFBackend(model_obj, tok, batch_size=batch_size)
        else:
            gen = VLLMBackend(model if isinstance(model, str) else None, llm=vllm_llm, tensor_parallel_size=tensor_parallel_size,
                              dtype=dtype, seed=seed, gguf_file=gguf_file, **(vllm_kwargs or {}))
        ids = [builder.encode(texts[i], tok) for i in shard]
        reported: set[int] = set()

        def on_finished(j: int) -> None:
            if j not in reported:
                reported.add(j)
                advance()

        def on_batch(indices: list[int], samples) -> None:
            batch_rows = []
            for j, group in zip(indices, samples):
                i = shard[j]
                ex = examples[i]
                outs = [s.text for s in group]
                modes = scorer.score(ex, texts[i], outs)
                head_scores, head_answers = modes[scorer.headline]
                row = {"doc_id": i, "id": ex.id, "gold": ex.gold, "prompt_sha256": prompt_hashes[ex.id],
                       "scores": head_scores, "answers": head_answers, "correct": as_correct(head_scores[0]) == 1.0,
                       "modes": {m: {"scores": sc, "answers": an} for m, (sc, an) in modes.items()},
                       "completions": outs, "num_tokens": [s.num_tokens for s in group],
                       "finish_reasons": [s.finish_reason for s in group], "question": ex.question}
                if ex.subject is not None:
                    row["subject"] = ex.subject
                if ex.level is not None:
                    row["level"] = ex.level
                batch_rows.append(row)
            if results_path:
                append_rows(results_path, batch_rows)
            new_rows.extend(batch_rows)
            for j in indices:
                on_finished(j)

        # a model handed in by the caller (e.g. mid-training) goes back to its mode and padding side
        hf_model = getattr(gen, "model", None)
        was_training = bool(getattr(hf_model, "training", False))
        t0 = time.perf_counter()
        try:
            if hf_model is not None:
                hf_model.eval()
            if shard:
                gen.generate(ids, params, on_batch=on_batch, keys=list(shard), on_finished=on_finished)
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
    stats = dist.gather([{"rank": dist.rank, "generated_tokens": gen.stats.generated_tokens if gen else 0,
                          "generate_seconds": gen.stats.seconds if gen else 0.0, "wall_seconds": wall,
                          "problems": len(new_rows)}])
    summary = None
    if dist.rank == 0:
        by_id = dict(done)
        for r in gathered:
            by_id.setdefault(r["id"], r)
        ordered = [by_id[ex.id] for ex in examples if ex.id in by_id]
        missing = [ex.id for ex in examples if ex.id not in by_id]
        if missing:
            raise RuntimeError(f"{len(missing)} problems have no result after generation (first: {missing[:3]}).")
        throughput = previous_throughput if (not pending and previous_throughput) else None
        summary = build_summary(benchmark, ordered, config, stats, ks=ks, throughput=throughput)
        if output_dir:
            from .lm_eval_format import write_lm_eval_files
            from .report import write_outputs

            others = [r for r in read_results(results_path) if r.get("id") not in doc_index]
            write_rows_atomically(results_path, ordered + others)  # dataset order; other selections kept
            write_prompt_file(os.path.join(output_dir, PROMPTS), examples, texts, builder, tok)
            write_outputs(output_dir, summary, ordered)
            write_lm_eval_files(output_dir, summary, ordered, {ex.id: t for ex, t in zip(examples, texts)})
        if return_rows:
            summary["rows"] = ordered
    return dist.broadcast(summary)


def write_prompt_file(path: str, examples: Sequence[Example], texts: Sequence[str], builder, tokenizer) -> None:
    """``prompts.jsonl``: the rendered prompt of every selected problem and a hash of its token ids."""
    rows = []
    for i, (ex, text) in enumerate(zip(examples, texts)):
        ids = builder.encode(text, tokenizer)
        rows.append({"doc_id": i, "id": ex.id, "prompt_sha256": sha256_text(text), "num_prompt_tokens": len(ids),
                     "token_ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest(), "prompt": text})
    write_rows_atomically(path, rows)


def build_summary(benchmark: str, rows: Sequence[dict], config: dict, stats: Sequence[dict] = (), *, ks=None,
                  throughput: dict | None = None) -> dict:
    """Metrics of the headline mode (+ subject/level breakdown for MATH), every mode side by side
    under ``modes``, and the throughput of the invocation that generated (``throughput=`` keeps a
    previous record)."""
    summary = {"benchmark": benchmark, "config": config, "headline": config.get("headline", "strict")}
    summary.update(summarize(rows, ks=ks))
    if rows and "modes" in rows[0]:
        summary["modes"] = {m: mode_summary([r["modes"][m] for r in rows], ks=ks) for m in rows[0]["modes"]}
    if benchmark in ("math", "math500"):
        summary["by_subject"] = breakdown(rows, lambda r: r.get("subject"))
        summary["by_level"] = breakdown(rows, lambda r: r.get("level"))
    if throughput is None:
        tokens = sum(s["generated_tokens"] for s in stats)
        gen_s = max((s["generate_seconds"] for s in stats), default=0.0)
        throughput = {
            "problems_generated_this_run": sum(s["problems"] for s in stats),
            "generated_tokens_this_run": tokens,
            "generate_seconds": gen_s,  # slowest process
            "tokens_per_second": tokens / gen_s if gen_s > 0 else None,
            "processes": len(stats) or 1,
        }
    summary["throughput"] = throughput
    lengths = [t for r in rows for t in r.get("num_tokens", [])]
    reasons = [f for r in rows for f in r.get("finish_reasons", [])]
    if lengths:
        summary["mean_completion_tokens"] = sum(lengths) / len(lengths)
        summary["truncated_fraction"] = sum(f == "length" for f in reasons) / len(reasons) if reasons else None
    from .published import match_published

    summary["published"] = match_published(config.get("model"), benchmark, config.get("prompt"))
    return summary


def rescore(src_dir: str, dst_dir: str | None = None, *, verifier_options: dict | None = None,
            verifier: Callable | None = None, headline: str = "strict", ks: Sequence[int] | None = None) -> dict:
    """Score the completions stored in ``src_dir/results.jsonl`` again, without generating, e.g.
    with other verifier options, another headline mode or after a verifier fix. Writes a complete
    output directory to ``dst_dir`` (default: ``src_dir`` + ``-rescored``) and returns its summary."""
    with open(os.path.join(src_dir, CONFIG), encoding="utf-8") as fh:
        config = json.load(fh)
    benchmark = config["benchmark"]
    scorer = Scorer(benchmark, fewshot=bool(config.get("num_fewshot")), headline=headline, verifier=verifier,
                    verifier_options=verifier_options)
    config = dict(config, verifier_options=dict(verifier_options) if verifier_options else None, rescored_from=src_dir,
                  headline=scorer.headline, scoring_modes=scorer.modes)
    rows = []
    for r in read_results(os.path.join(src_dir, RESULTS)):
        ex = Example(id=r["id"], question=r.get("question", ""), gold=r["gold"])
        modes = scorer.score(ex, ex.question, r["completions"])
        sc, an = modes[scorer.headline]
        rows.append(dict(r, scores=sc, answers=an, correct=as_correct(sc[0]) == 1.0,
                         modes={m: {"scores": s, "answers": a} for m, (s, a) in modes.items()}))
    if not rows:
        raise BenchmarkDataError(f"{src_dir}/{RESULTS} has no rows to rescore.")
    dst_dir = dst_dir or src_dir.rstrip("/") + "-rescored"
    os.makedirs(dst_dir, exist_ok=True)
    with open(os.path.join(dst_dir, CONFIG), "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    write_rows_atomically(os.path.join(dst_dir, RESULTS), rows)
    summary = build_summary(benchmark, rows, config, ks=ks)
    from .lm_eval_format import write_lm_eval_files
    from .report import write_outputs

    prompts = read_results(os.path.join(src_dir, PROMPTS))
    if prompts:
        write_rows_atomically(os.path.join(dst_dir, PROMPTS), prompts)
    write_outputs(dst_dir, summary, rows)
    write_lm_eval_files(dst_dir, summary, rows, {p["id"]: p["prompt"] for p in prompts})
    return summary
