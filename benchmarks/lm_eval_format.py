"""Results in lm-evaluation-harness's file layout, next to this project's own files.

``write_lm_eval_files(output_dir, summary, rows, prompts)`` writes, like lm-eval 0.4's
``--output_path DIR --log_samples``:

* ``DIR/<model, sanitized>/results_<timestamp>.json``: ``results`` (per task ``"exact_match,<filter>"``
  and ``"exact_match_stderr,<filter>"``, one filter per scoring mode: ``strict-match``,
  ``flexible-extract``, ``deepseek``), ``configs``, ``versions``, ``n-shot``, ``higher_is_better``,
  ``n-samples``, ``config`` (model, model_args, batch_size, limit, gen_kwargs, random_seed) and ``date``;
* ``DIR/<model, sanitized>/samples_<task>_<timestamp>.jsonl``: one line per (problem, filter) with
  ``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``, ``filter``,
  ``metrics``, ``doc_hash``, ``prompt_hash``, ``target_hash`` and ``exact_match``.

The task is named ``<benchmark>_<preset>`` (e.g. ``gsm8k_deepseek-fewshot``). The sanitizing rule
and the timestamp (``datetime.now().isoformat()`` with ``:`` -> ``-``) are lm-eval's. The stderr is
lm-eval's: the sample standard deviation over problems divided by sqrt(n).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import datetime
from typing import Sequence

from .prompts import sha256_text

FILTER_NAMES = {"strict": "strict-match", "flexible": "flexible-extract", "deepseek": "deepseek", "custom": "custom"}


def sanitize_model_name(name: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def mean_stderr(values: Sequence[float]) -> float | None:
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def _top1(row: dict, mode: str) -> float:
    s = row["modes"][mode]["scores"][0]
    return 1.0 if s is not None and float(s) >= 0.5 else 0.0


def write_lm_eval_files(output_dir: str, summary: dict, rows: Sequence[dict], prompts: dict[str, str]) -> tuple[str, str]:
    """Write the two files; returns their paths. ``prompts``: id -> rendered prompt text."""
    cfg = summary["config"]
    task = f"{summary['benchmark']}_{cfg['prompt']}"
    folder = os.path.join(output_dir, sanitize_model_name(cfg["model"]))
    os.makedirs(folder, exist_ok=True)
    stamp = datetime.now().isoformat().replace(":", "-")
    modes = [m for m in rows[0]["modes"]] if rows else []
    results = {"alias": task}
    for m in modes:
        vals = [_top1(r, m) for r in rows]
        f = FILTER_NAMES.get(m, m)
        results[f"exact_match,{f}"] = sum(vals) / len(vals)
        stderr = mean_stderr(vals)
        results[f"exact_match_stderr,{f}"] = "N/A" if stderr is None else stderr
    gen_kwargs = {"until": list(cfg["stop"]), "do_sample": cfg["temperature"] > 0, "temperature": cfg["temperature"],
                  "top_p": cfg["top_p"], "max_gen_toks": cfg["max_new_tokens"]}
    model_args = f"pretrained={cfg['model']}" + (f",gguf_file={cfg['gguf_file']}" if cfg.get("gguf_file") else "") \
        + f",dtype={cfg['dtype']}"
    doc = {
        "results": {task: results},
        "group_subtasks": {task: []},
        "configs": {task: {"task": task, "dataset_path": cfg.get("data_file") or cfg["benchmark"],
                           "output_type": "generate_until", "num_fewshot": cfg["num_fewshot"],
                           "generation_kwargs": gen_kwargs, "repeats": cfg["num_samples"],
                           "filter_list": [{"name": FILTER_NAMES.get(m, m)} for m in modes],
                           "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
                           "metadata": {"preset": cfg["prompt"], "protocol": cfg.get("protocol"),
                                        "headline": cfg.get("headline")}}},
        "versions": {task: 1.0},
        "n-shot": {task: cfg["num_fewshot"]},
        "higher_is_better": {task: {"exact_match": True}},
        "n-samples": {task: {"original": len(rows), "effective": len(rows)}},
        "config": {"model": cfg["backend"], "model_args": model_args, "batch_size": cfg.get("batch_size"),
                   "limit": cfg.get("limit"), "gen_kwargs": gen_kwargs, "random_seed": cfg["seed"],
                   "model_fingerprint": cfg.get("model_fingerprint")},
        "date": time.time(),
        "model_name": cfg["model"],
        "rescored_from": cfg.get("rescored_from"),
        "model_name_sanitized": sanitize_model_name(cfg["model"]),
        "package_versions": cfg.get("package_versions"),
    }
    results_path = os.path.join(folder, f"results_{stamp}.json")
    with open(results_path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, ensure_ascii=False)
    samples_path = os.path.join(folder, f"samples_{task}_{stamp}.jsonl")
    with open(samples_path, "w", encoding="utf-8") as fh:
        for r in rows:
            prompt = prompts.get(r["id"], "")
            d = {"id": r["id"], "question": r.get("question"), "gold": r["gold"]}
            for m in modes:
                fh.write(json.dumps({
                    "doc_id": r.get("doc_id"), "doc": d, "target": r["gold"],
                    "arguments": [[prompt, gen_kwargs]] * len(r["completions"]),
                    "resps": [[c] for c in r["completions"]],
                    "filtered_resps": r["modes"][m]["answers"],
                    "filter": FILTER_NAMES.get(m, m), "metrics": ["exact_match"],
                    "doc_hash": sha256_text(json.dumps(d, indent=2, ensure_ascii=False)),
                    "prompt_hash": sha256_text(prompt), "target_hash": sha256_text(str(r["gold"])),
                    "exact_match": _top1(r, m),
                }, ensure_ascii=False) + "\n")
    return results_path, samples_path
