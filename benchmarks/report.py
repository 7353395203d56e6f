"""``summary.json``, ``report.md`` (tables) and ``plot.png`` for an evaluation output directory.

``report.md``: the headline metrics, the three scoring modes side by side, the published numbers for
this model (with the difference when the preset is the paper's protocol), the subject / level
breakdown and the throughput.

The plot is titled ``<model> | <benchmark> | <preset>``. By priority: the pass@k and maj@k curves
(sampled runs, n > 1); else the scoring modes next to the accuracy by subject and by level (MATH with
more than one subject / level present); else one labelled bar per scoring mode with its Wilson 95%
interval (GSM8K, or a single-category selection). Groups without a label are left out, never drawn
as "unknown"; every bar carries its value and count, so a 0% bar is still visibly a result.
"""

from __future__ import annotations

import json
import os
from typing import Sequence


PLOT = "plot.png"
REPORT = "report.md"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(ci) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


MODE_TEXT = {"strict": "explicit final answer only", "flexible": "explicit answer, else the last number in the prose",
             "deepseek": "DeepSeekMath's rules (1e-3 tolerance, percent, lists)", "custom": "the verifier passed in"}


def _model_label(cfg: dict) -> str:
    model = str(cfg.get("model") or "model")
    name = os.path.basename(model.rstrip("/")) or model
    return name + (f" ({cfg['gguf_file']})" if cfg.get("gguf_file") else "")


def plot_title(summary: dict) -> str:
    cfg = summary.get("config", {})
    return f"{_model_label(cfg)} | {summary['benchmark']} | {cfg.get('prompt')}"


def render_report(summary: dict) -> str:
    cfg = summary.get("config", {})
    headline = summary.get("headline", "strict")
    lines = [f"# {summary['benchmark']} evaluation", ""]
    shots = f" ({cfg.get('num_fewshot')}-shot)" if cfg.get("num_fewshot") else ""
    lines += [
        f"- model: `{cfg.get('model')}`" + (f" (GGUF `{cfg.get('gguf_file')}`)" if cfg.get("gguf_file") else ""),
        f"- prompt preset: `{cfg.get('prompt')}`{shots}",
        "- decoding: " + ("greedy" if not cfg.get("temperature") else f"sampled, T={cfg.get('temperature')}, top_p={cfg.get('top_p')}")
        + f", n={summary.get('num_samples')}, max_new_tokens={cfg.get('max_new_tokens')}, seed={cfg.get('seed')}",
        f"- backend: `{cfg.get('backend')}`, dtype `{cfg.get('dtype')}`, verifier `{cfg.get('verifier')}`",
        "",
        "## Results",
        "",
        f"Headline: **{headline}**.",
        "",
        "| metric | value (%) | 95% interval (%) |",
        "|---|---:|---|",
        f"| accuracy (top-1, {headline}), {summary['correct']}/{summary['num_problems']} | {_pct(summary['accuracy'])} | {_ci(summary['accuracy_ci95'])} Wilson |",
    ]
    if "avg@n" in summary:
        lines.append(f"| avg@{summary['num_samples']} | {_pct(summary['avg@n'])} | {_ci(summary['avg@n_ci95'])} bootstrap |")
        for k, v in summary["pass@k"].items():
            lines.append(f"| pass@{k} | {_pct(v)} | {_ci(summary['pass@k_ci95'][k])} bootstrap |")
        for k, v in summary["maj@k"].items():
            lines.append(f"| maj@{k} | {_pct(v)} | {_ci(summary['maj@k_ci95'][k])} bootstrap |")
    lines.append("")
    modes = summary.get("modes") or {}
    if modes:
        lines += ["## Scoring modes side by side", "", "| mode | rule | correct | top-1 (%) | 95% Wilson (%) | no answer |",
                  "|---|---|---:|---:|---|---:|"]
        for m, v in modes.items():
            mark = " (headline)" if m == headline else ""
            lines.append(f"| {m}{mark} | {MODE_TEXT.get(m, '')} | {v['correct']}/{v['num_problems']} | {_pct(v['accuracy'])} "
                         f"| {_ci(v['accuracy_ci95'])} | {v.get('no_answer', 0)} |")
        lines += ["", "Definitions: docs/evaluation.md, \"Scoring modes\".", ""]
    published = summary.get("published") or []
    if published:
        lines += ["## Published numbers", "", "| model | published (%) | protocol | this run, strict (%) | difference (points) | source |",
                  "|---|---:|---|---:|---:|---|"]
        this = 100 * (modes.get("strict", {}).get("accuracy", summary["accuracy"]))
        for row in published:
            if row["same_protocol"]:
                diff = f"{this - row['accuracy']:+.1f}"
                proto = f"{row['protocol']} (same preset)"
            else:
                diff = "not comparable"
                want = ", ".join(row["presets"]) or "no preset here"
                proto = f"{row['protocol']}; this run used `{cfg.get('prompt')}`, the paper's protocol is {want}"
            lines.append(f"| {row['model']} | {row['accuracy']:.1f} | {proto} | {this:.1f} | {diff} | {row['source']} |")
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
    lines.append(f"- generating invocation: {tp.get('problems_generated_this_run', 0)} problems, "
                 f"{tp.get('generated_tokens_this_run', 0)} tokens in {tp.get('generate_seconds', 0):.1f} s"
                 + (f" = {tps:.1f} tokens/s" if tps else "") + f" over {tp.get('processes', 1)} process(es)")
    if "mean_completion_tokens" in summary:
        lines.append(f"- mean completion length {summary['mean_completion_tokens']:.1f} tokens; "
                     f"{_pct(summary.get('truncated_fraction'))}% hit max_new_tokens")
    if summary.get("unscorable_samples"):
        lines.append(f"- {summary['unscorable_samples']} samples the verifier could not score (counted as wrong)")
    lines += ["", f"![plot]({PLOT})", ""]
    return "\n".join(lines)


def _known_groups(groups: dict) -> dict:
    """Groups with a real label (rows without a subject / level are not drawn as "unknown")."""
    return {g: v for g, v in groups.items() if g != "unknown"}


def _bars(ax, labels, groups, color="#4c72b0"):
    """One bar per group with its Wilson interval, a dot at the value (so 0% is visible) and the
    value and count written above the interval."""
    acc = [100 * groups[g]["accuracy"] for g in labels]
    top = [100 * groups[g]["ci95"][1] for g in labels]
    lo = [max(0.0, a - 100 * groups[g]["ci95"][0]) for a, g in zip(acc, labels)]
    hi = [max(0.0, t - a) for a, t in zip(acc, top)]
    xs = list(range(len(labels)))
    ax.bar(xs, acc, color=color, width=0.6 if len(labels) > 1 else 0.4, edgecolor="#2a3f66")
    ax.errorbar(xs, acc, yerr=[lo, hi], fmt="o", color="#222222", ecolor="#555555", capsize=5, markersize=4, linewidth=1)
    for x, a, t, g in zip(xs, acc, top, labels):
        ax.annotate(f"{a:.1f}% ({groups[g]['correct']}/{groups[g]['n']})", (x, t), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 112)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    if len(labels) == 1:
        ax.set_xlim(-1, 1)


def plot(summary: dict, rows: Sequence[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    title = plot_title(summary)
    headline = summary.get("headline", "strict")
    subj = _known_groups(summary.get("by_subject", {}))
    level = _known_groups(summary.get("by_level", {}))
    modes = summary.get("modes") or {}
    mode_groups = {m: {"accuracy": v["accuracy"], "ci95": v["accuracy_ci95"], "correct": v["correct"], "n": v["num_problems"]}
                   for m, v in modes.items()}
    if "pass@k" in summary:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for key, label in (("pass@k", "pass@k (unbiased)"), ("maj@k", "maj@k")):
            ks = [int(k) for k in summary[key]]
            ax.plot(ks, [100 * summary[key][str(k)] for k in ks], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("k")
        ax.set_ylabel(f"% ({headline})")
        ax.set_ylim(0, 105)
        ax.set_title(f"{title}\npass@k and maj@k, n={summary['num_samples']}", fontsize=10)
        ax.legend()
    elif len(subj) > 1 or len(level) > 1:
        panels = [(g, t) for g, t in ((subj, "by subject"), (level, "by level")) if len(g) > 1]
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4 + 5 * len(panels), 4.8),
                                 gridspec_kw={"width_ratios": [3] + [max(3, len(g)) for g, _ in panels]})
        _bars(axes[0], list(mode_groups), mode_groups, color="#8172b2")
        axes[0].set_xticks(range(len(mode_groups)))
        axes[0].set_xticklabels(list(mode_groups), fontsize=8)
        axes[0].set_title("scoring modes (95% Wilson)", fontsize=9)
        for ax, (groups, label) in zip(axes[1:], panels):
            labels = list(groups)
            _bars(ax, labels, groups)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([f"{g}" for g in labels], rotation=30 if label == "by subject" else 0,
                               ha="right" if label == "by subject" else "center", fontsize=8)
            ax.set_title(f"{headline} accuracy {label} (95% Wilson)", fontsize=9)
            ax.set_xlabel("subject" if label == "by subject" else "level")
        fig.suptitle(title, fontsize=11)
    else:
        # one category (GSM8K, or MATH rows without subjects): one labelled bar per scoring mode
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        if not mode_groups:
            mode_groups = {headline: {"accuracy": summary["accuracy"], "ci95": summary["accuracy_ci95"],
                                      "correct": summary["correct"], "n": summary["num_problems"]}}
        labels = list(mode_groups)
        _bars(ax, labels, mode_groups)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([f"{m} (headline)" if m == headline else m for m in labels], fontsize=9)
        only = "".join(f", all {k} {next(iter(g))}" for k, g in (("subject", subj), ("level", level)) if len(g) == 1)
        ax.set_xlabel("scoring mode")
        ax.set_title(f"{title}\ntop-1 accuracy over {summary['num_problems']} problems{only} (95% Wilson)", fontsize=10)
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
