"""Produce the demo's shipped model: a tiny Qwen2 given a short supervised warm-up on addition.

    python scripts/make_demo_model.py --output trl_grpo_plus/assets/demo-model

The warm-up is deliberately short, so the model starts part-way: it has learnt the
``<think>…</think><answer>…</answer>`` shape and part of column addition, leaving GRPO something to
improve. Everything is offline and deterministic (seeded); it runs in a few minutes on 2 CPU cores.
Accuracy is measured greedily on held-out rows and written to ``warmup.json`` beside the model.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch

from trl_grpo_plus.demo_task import addition_rows, chat_prompt, split_seeds, worked_solution
from trl_grpo_plus.tiny import DEFAULT_CORPUS, build_model, build_tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="trl_grpo_plus/assets/demo-model")
    p.add_argument("--steps", type=int, default=220, help="optimizer steps of the warm-up (the shipped model used 220)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden-size", type=int, default=96)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-rows", type=int, default=200)
    return p.parse_args(argv)


def encode_batch(tokenizer, rows):
    """Left-padded prompt+completion ids, with labels only on the completion (and its EOS)."""
    eos = tokenizer.eos_token
    texts = [chat_prompt(tokenizer, r["question"]) for r in rows]
    prompts = [tokenizer(t).input_ids for t in texts]
    full = [tokenizer(t + worked_solution(r["a"], r["b"]) + eos).input_ids for t, r in zip(texts, rows)]
    width = max(map(len, full))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, f) in enumerate(zip(prompts, full)):
        off = width - len(f)
        ids[i, off:] = torch.tensor(f)
        attn[i, off:] = 1
        labels[i, off + len(p):] = torch.tensor(f[len(p):])
    return ids, attn, labels


@torch.no_grad()
def greedy_accuracy(model, tokenizer, rows, max_new_tokens=40) -> float:
    model.eval()
    enc = tokenizer([chat_prompt(tokenizer, r["question"]) for r in rows], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    model.train()
    return sum(f"<answer>{r['answer']}</answer>" in t for r, t in zip(rows, texts)) / len(rows)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    seeds = split_seeds()
    corpus_rows = addition_rows(2000, seed=seeds["warmup"] + 100)
    tokenizer = build_tokenizer(DEFAULT_CORPUS, vocab_size=320)  # only to render the chat template
    corpus = [chat_prompt(tokenizer, r["question"]) + worked_solution(r["a"], r["b"]) for r in corpus_rows]
    tokenizer = build_tokenizer(corpus, vocab_size=384)
    model = build_model(tokenizer, hidden_size=args.hidden_size, layers=args.layers, heads=4, kv_heads=2,
                        intermediate_size=args.hidden_size * 2, seed=args.seed)
    train_rows = addition_rows(args.steps * args.batch_size, seed=seeds["warmup"])
    heldout = addition_rows(args.eval_rows, seed=seeds["heldout"])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    start = time.time()
    for step in range(args.steps):
        batch = train_rows[step * args.batch_size:(step + 1) * args.batch_size]
        ids, attn, labels = encode_batch(tokenizer, batch)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
    acc = greedy_accuracy(model, tokenizer, heldout)
    print(f"held-out greedy accuracy after warm-up: {acc:.3f}")
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "warmup.json").write_text(json.dumps({**vars(args), "heldout_greedy_accuracy": acc,
                                                  "params": sum(p.numel() for p in model.parameters())}, indent=2))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"saved to {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
