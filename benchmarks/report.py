"""``summary.json``, ``report.md`` (tables) and ``plot.png`` for an evaluation output directory.

The plot is, by priority: accuracy by subject and by level (MATH benchmarks); else the pass@k and
maj@k curves (sampled runs, n > 1); else running top-1 accuracy over problems with its Wilson 95%
band (greedy GSM8K).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from .metrics import as_correct, wilson_interval

PLOT = "plot.png"
REPORT = "report.md"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def render_report(summary: dict) -> str:
    cfg = summary.get("config", {})
    lines = [f"# {summary['benchmark']} evaluation", ""]
    lines += [
        f"- model: `{cfg.get('model')}`" + (f" (GGUF `{cfg.get('gguf_file')}`)" if cfg.get("gguf_file") else ""),
        f"- prompt: `{cfg.get('prompt')}`" + (f" ({cfg.get('num_fewshot')}-shot)" if cfg.get("prompt") == "fewshot" else ""),
        f"- decoding: " + ("greedy" if not cfg.get("temperature") else f"sampled, T={cfg.get('temperature')}, top_p={cfg.get('top_p')}")
        + f", n={summary.get('num_samples')}, max_new_tokens={cfg.get('max_new_tokens')}",
        f"- backend: `{cfg.get('backend')}`, dtype `{cfg.get('dtype')}`, verifier `{cfg.get('verifier')}`",
        "",
        "## Results",
        "",
        "| metric | value (%) | 95% interval (%) |",
        "|---|---:|---|",
        f"| accuracy (top-1), {summary['correct']}/{summary['num_problems']} | {_pct(summary['accuracy'])} | {_ci(summary['accuracy_ci95'])} Wilson |",
    ]
    if "avg@n" in summary:
        lines.append(f"| avg@{summary['num_samples']} | {_pct(summary['avg@n'])} | {_ci(summary['avg@n_ci95'])} bootstrap |")
        for k, v in summary["pass@k"].items():
            lines.append(f"| pass@{k} | {_pct(v)} | {_ci(summary['pass@k_ci95'][k])} bootstrap |")
        for k, v in summary["maj@k"].items():
            lines.append(f"| maj@{k} | {_pct(v)} | {_ci(summary['maj@k_ci95'][k])} bootstrap |")
    lines.append("")
    for title, key in (("By subject", "by_subject"), ("By level", "by_level")):
        if key in summary:
            lines += [f"## {title}", "", "| group | n | correct | accuracy (%) | 95% Wilson (%) |", "|---|---:|---:|---:|---|"]
            for g, v in summary[key].items():
                lines.append(f"| {g} | {v['n']} | {v['correct']} | {_pct(v['accuracy'])} | {_ci(v['ci95'])} |")
            lines.append("")
    tp = summary.get("throughput", {})
    lines += ["## Generation", ""]
    tps = tp.get("tokens_per_second")
    lines.append(f"- this invocation: {tp.get('problems_generated_this_run', 0)} problems, "
                 f"{tp.get('generated_tokens_this_run', 0)} tokens in {tp.get('generate_seconds', 0):.1f} s"
                 + (f" = {tps:.1f} tokens/s" if tps else "") + f" over {tp.get('processes', 1)} process(es)")
    if "mean_completion_tokens" in summary:
        lines.append(f"- mean completion length {summary['mean_completion_tokens']:.1f} tokens; "
                     f"{_pct(summary.get('truncated_fraction'))}% hit max_new_tokens")
    if summary.get("unscorable_samples"):
        lines.append(f"- {summary['unscorable_samples']} samples the verifier could not score (counted as wrong)")
    lines += ["", f"![plot]({PLOT})", ""]
    return "\n".join(lines)


def plot(summary: dict, rows: Sequence[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = summary["benchmark"]
    if "by_subject" in summary:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [7, 5]})
        for ax, key, title in ((axes[0], "by_subject", "by subject"), (axes[1], "by_level", "by level")):
            groups = summary[key]
            labels = list(groups)
            acc = [100 * groups[g]["accuracy"] for g in labels]
            lo = [max(0.0, 100 * (groups[g]["accuracy"] - groups[g]["ci95"][0])) for g in labels]
            hi = [max(0.0, 100 * (groups[g]["ci95"][1] - groups[g]["accuracy"])) for g in labels]
            ax.bar(range(len(labels)), acc, yerr=[lo, hi], capsize=3, color="#4c72b0")
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([f"{g}\n(n={groups[g]['n']})" for g in labels], rotation=30 if key == "by_subject" else 0,
                               ha="right" if key == "by_subject" else "center", fontsize=8)
            ax.set_ylabel("top-1 accuracy (%)")
            ax.set_title(f"{name}: accuracy {title} (95% Wilson)")
    elif "pass@k" in summary:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for key, label in (("pass@k", "pass@k (unbiased)"), ("maj@k", "maj@k")):
            ks = [int(k) for k in summary[key]]
            ax.plot(ks, [100 * summary[key][str(k)] for k in ks], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_ylabel("%")
        ax.set_title(f"{name}: pass@k and maj@k, n={summary['num_samples']}")
        ax.legend()
    else:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        xs, ys, lo, hi, c = [], [], [], [], 0.0
        for i, r in enumerate(rows, 1):
            c += as_correct(r["scores"][0])
            a, b = wilson_interval(c, i)
            xs.append(i), ys.append(100 * c / i), lo.append(100 * a), hi.append(100 * b)
        ax.plot(xs, ys, label="running top-1 accuracy")
        ax.fill_between(xs, lo, hi, alpha=0.25, label="95% Wilson")
        ax.set_xlabel("problems scored")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{name}: top-1 accuracy {100 * summary['accuracy']:.1f}% (n={len(rows)})")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(output_dir: str, summary: dict, rows: Sequence[dict]) -> None:
    os.makedirs(output_dir, exist_ok=True)
    tmp = os.path.join(output_dir, "summary.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    os.replace(tmp, os.path.join(output_dir, "summary.json"))
    with open(os.path.join(output_dir, REPORT), "w", encoding="utf-8") as fh:
        fh.write(render_report(summary))
    plot(summary, rows, os.path.join(output_dir, PLOT))
