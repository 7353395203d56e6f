"""``trl-grpo-plus eval {gsm8k,math,math500} ...``: the command-line face of :func:`evaluate`."""

from __future__ import annotations

import argparse
import json
import os
import sys

BENCHMARK_NAMES = ("gsm8k", "math", "math500")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trl-grpo-plus eval",
        description="DeepSeekMath-style GSM8K / MATH evaluation scored with trl_grpo_plus.rewards verifiers.",
    )
    p.add_argument("benchmark", help="gsm8k (1319 test problems), math (full 5000) or math500")
    p.add_argument("--model", required=True, help="hub id or local folder (with --gguf-file: the folder holding it)")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (dequantized on load)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--prompt", default="chat",
                   help="prompt preset: deepseek-fewshot (alias fewshot), deepseek-chat, chat, lm-eval-gsm8k-cot, "
                        "lm-eval-minerva, deepseek-math, qwen2.5-math, or one registered with register_preset()")
    p.add_argument("--num-samples", type=int, default=1, help="samples per problem (n); n > 1 needs --temperature > 0")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the preset's budget (1024 for the DeepSeek and chat presets, 256 for lm-eval's)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (hf backend)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N problems only")
    p.add_argument("--data-file", default=None, help="local JSONL with the hub dataset's field names")
    p.add_argument("--fewshot-file", default=None,
                   help="JSONL of exemplars replacing the preset's (question/answer for GSM8K, problem/solution for MATH)")
    p.add_argument("--num-fewshot", type=int, default=None, help="keep the first k exemplars (default: all of the preset's)")
    p.add_argument("--output", required=True, help="output directory (results.jsonl, summary.json, report.md, plot.png)")
    p.add_argument("--overwrite", action="store_true", help="discard results already in --output instead of resuming")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (hf backend; vllm dtype)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ks", default=None, help="comma-separated k values for pass@k / maj@k (default 1,2,4,..,n)")
    p.add_argument("--headline", choices=("strict", "flexible", "deepseek"), default="strict",
                   help="the scoring mode reported as accuracy (all three are always computed and reported)")
    p.add_argument("--no-last-number-fallback", action="store_true",
                   help="deprecated: strict is now the default headline (same as --headline strict)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend only")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.benchmark not in BENCHMARK_NAMES:
        print(f"trl-grpo-plus eval: unknown benchmark {args.benchmark!r}; choose one of {', '.join(BENCHMARK_NAMES)}.",
              file=sys.stderr)
        return 2
    from .datasets import BenchmarkDataError
    from .runner import evaluate

    try:
        ks = [int(k) for k in args.ks.split(",")] if args.ks else None
    except ValueError:
        print(f"trl-grpo-plus eval: --ks must be comma-separated integers, got {args.ks!r}.", file=sys.stderr)
        return 2
    try:
        summary = evaluate(
            args.benchmark, args.model, gguf_file=args.gguf_file, backend=args.backend, prompt=args.prompt,
            num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
            data_file=args.data_file, fewshot_file=args.fewshot_file, num_fewshot=args.num_fewshot,
            output_dir=args.output, overwrite=args.overwrite, dtype=args.dtype, seed=args.seed, ks=ks,
            tensor_parallel_size=args.tensor_parallel_size,
            headline="strict" if args.no_last_number_fallback else args.headline,
            progress=not args.no_progress,
        )
    except (BenchmarkDataError, ValueError) as exc:
        print(f"trl-grpo-plus eval: error: {exc}", file=sys.stderr)
        return 2
    if summary is not None and os.environ.get("RANK", "0") == "0":  # one line, from rank 0 only
        brief = {k: summary[k] for k in ("benchmark", "num_problems", "headline", "accuracy", "accuracy_ci95") if k in summary}
        brief["modes"] = {m: v["accuracy"] for m, v in (summary.get("modes") or {}).items()}
        brief["tokens_per_second"] = summary.get("throughput", {}).get("tokens_per_second")
        print(json.dumps(brief))
    return 0


if __name__ == "__main__":  # through the dispatcher, which also closes the process group
    from trl_grpo_plus.cli import main as cli_main

    sys.exit(cli_main(["eval", *sys.argv[1:]]))
