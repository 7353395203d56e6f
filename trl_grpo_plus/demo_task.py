"""The demo's synthetic verifiable task: two-number addition answered inside ``<answer>`` tags.

A row is ``{"question": "Add 47 and 38.", "answer": "85"}``. Prompts are the benchmark harness's ``chat``
preset (``benchmarks.prompts.chat_messages``), so training and evaluation see the same text. The target completion, used only by the
warm-up script (``scripts/make_demo_model.py``), writes the column sums from the units up, then the
answer::

    <think>7+8=15 4+3+1=8</think><answer>85</answer>

The reward is the registry's ``math`` verifier (correctness of the ``<answer>``) plus the ``format``
verifier (the ``<think>…</think><answer>…</answer>`` shape).
"""

from __future__ import annotations

import random

QUESTION_TEMPLATE = "Add {a} and {b}."


def addition_rows(n: int, *, seed: int, low: int = 10, high: int = 99) -> list[dict]:
    """``n`` rows of ``a + b`` with ``a, b`` uniform in ``[low, high]``, reproducible from ``seed``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        rows.append({"question": QUESTION_TEMPLATE.format(a=a, b=b), "answer": str(a + b), "a": a, "b": b})
    return rows


def worked_solution(a: int, b: int) -> str:
    """Column addition from the units digit up, then the tagged answer."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        terms = f"{x}+{y}" + (f"+{carry}" if carry else "")
        total = x + y + carry
        steps.append(f"{terms}={total}")
        carry = total // 10
    return f"<think>{' '.join(steps)}</think><answer>{a + b}</answer>"


def split_seeds() -> dict[str, int]:
    """Fixed seeds so the warm-up, GRPO and held-out sets never share a generator stream."""
    return {"warmup": 1, "train": 2, "heldout": 3}


def chat_prompt(tokenizer, question: str) -> str:
    """The rendered ``chat`` preset prompt, exactly as the benchmark harness builds it."""
    from .benchmarks.prompts import render_chat

    return render_chat(question, tokenizer)
