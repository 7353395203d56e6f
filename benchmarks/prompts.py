"""From a question to the exact token ids the model is fed, under a preset (see ``presets.py``).

``build_prompts(benchmark, preset, ...)`` returns a :class:`PromptBuilder`: the preset's layout for
that benchmark with its exemplars loaded and joined once. ``builder.render(question, tokenizer)``
gives the prompt text and ``builder.encode(text, tokenizer)`` its token ids by the layout's BOS rule.
Both backends take those ids, so hf and vLLM see the same tokens.

Exemplar rows: the shipped files already hold worked answers (``"... The answer is 6."`` for GSM8K;
a solution ending ``"Final Answer: The final answer is $X$. I hope it is correct."`` for MATH).
Rows in a benchmark's own format (a ``fewshot_file`` of GSM8K train rows with ``####``, or MATH rows
without the final-answer line) are brought to that form first: GSM8K -> the reasoning without
calculator annotations, then ``" The answer is <gold>."``; MATH -> the solution, then
``"\\nFinal Answer: The final answer is $<gold>$. I hope it is correct."``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Sequence

from .datasets import BenchmarkDataError, Example, gsm8k_gold, gsm8k_rationale, last_boxed, read_jsonl
from .presets import BOXED_INSTRUCTION, EXEMPLAR_FIELDS, FAMILY, Layout, Preset, asset_path, file_sha256, get_preset

__all__ = ["BOXED_INSTRUCTION", "PromptBuilder", "build_prompts", "build_preset", "chat_messages", "encode_prompt",
           "render_chat", "sha256_text", "truncate_at_stop"]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fill(template: str, fields: dict) -> str:
    """``template`` with each ``{name}`` of ``fields`` replaced; other braces (``\\boxed{}``) stay."""
    return re.sub(r"\{(\w+)\}", lambda m: str(fields[m.group(1)]) if m.group(1) in fields else m.group(0), template)


def chat_messages(question: str, *, system: str | None = None, query: str = "{question}\n" + BOXED_INSTRUCTION) -> list[dict]:
    """The chat turns of a chat-kind layout (default: the ``chat`` preset's single user turn)."""
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": fill(query, {"question": question})}]


def render_chat(question: str, tokenizer, *, system: str | None = None,
                query: str = "{question}\n" + BOXED_INSTRUCTION) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise BenchmarkDataError(
            "This prompt preset uses the tokenizer's chat template, and this tokenizer has none. "
            "Use --prompt deepseek-fewshot (base models) or deepseek-chat (plain text), or set tokenizer.chat_template."
        )
    return tokenizer.apply_chat_template(chat_messages(question, system=system, query=query), tokenize=False,
                                         add_generation_prompt=True)


def encode_prompt(tokenizer, text: str, bos: str = "auto") -> list[int]:
    """Token ids of a rendered prompt. ``bos="auto"``: the tokenizer's special tokens (a BOS where
    it adds one) unless ``text`` already starts with the BOS string; ``"never"``: none."""
    bos_token = getattr(tokenizer, "bos_token", None)
    add = bos == "auto" and not (bos_token and text.startswith(bos_token))
    return list(tokenizer(text, add_special_tokens=add)["input_ids"])


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` before the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


# --------------------------------------------------------------------------------------------------
# exemplars


def exemplar_row(row: dict | Example, family: str) -> dict:
    """An exemplar in the shipped files' form (see the module docstring)."""
    if isinstance(row, Example):
        if not row.solution:
            raise BenchmarkDataError(f"few-shot exemplar {row.id!r} has no reference solution; exemplars need one.")
        if family == "gsm8k":
            return {"question": row.question, "answer": f"{row.solution} The answer is {row.gold}."}
        sol = row.solution.strip()
        if "Final Answer:" not in sol:
            sol += f"\nFinal Answer: The final answer is ${row.gold}$. I hope it is correct."
        return {"problem": row.question, "solution": sol}
    q_field, a_field = EXEMPLAR_FIELDS[family]
    missing = [f for f in (q_field, a_field) if not isinstance(row.get(f), str) or not row.get(f)]
    if missing:
        raise BenchmarkDataError(
            f"few-shot exemplar {row!r:.120}: field(s) {missing} missing or empty; a {family} exemplar needs "
            f"'{q_field}' and '{a_field}'."
        )
    if family == "gsm8k" and "####" in row["answer"]:  # a raw GSM8K row
        return {"question": row["question"], "answer": f"{gsm8k_rationale(row['answer'])} The answer is {gsm8k_gold(row['answer'])}."}
    if family == "math" and "Final Answer:" not in row["solution"]:  # a raw MATH row
        gold = row.get("answer") or last_boxed(row["solution"])
        if not gold:
            raise BenchmarkDataError(f"few-shot exemplar {row['problem'][:60]!r}: no 'answer' and no \\boxed{{}} in its solution.")
        sol = row["solution"].strip() + f"\nFinal Answer: The final answer is ${gold}$. I hope it is correct."
        return {"problem": row["problem"], "solution": sol}
    return {q_field: row[q_field], a_field: row[a_field]}


# --------------------------------------------------------------------------------------------------
# the builder


@dataclass(frozen=True)
class PromptBuilder:
    """A preset's layout for one benchmark, exemplars loaded and joined (``prefix``)."""

    preset: Preset
    benchmark: str
    layout: Layout
    prefix: str  # the few-shot block, joiners included ("" when zero-shot or chat)
    num_fewshot: int
    exemplar_file: str | None  # absolute path, or None (no exemplars, or exemplars given as objects)
    exemplar_file_sha256: str | None

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def stop(self) -> tuple[str, ...]:
        return self.layout.stop

    @property
    def max_new_tokens(self) -> int:
        return self.layout.max_new_tokens

    @property
    def exemplars_sha256(self) -> str | None:
        """Hash of the joined few-shot block (what the model sees), None without exemplars."""
        return sha256_text(self.prefix) if self.num_fewshot else None

    def render(self, question: str, tokenizer=None) -> str:
        lay = self.layout
        if lay.kind == "chat":
            return render_chat(question, tokenizer, system=lay.system, query=lay.query)
        return self.prefix + fill(lay.query, {"question": question})

    def encode(self, text: str, tokenizer) -> list[int]:
        return encode_prompt(tokenizer, text, self.layout.bos)

    def describe(self) -> dict:
        """What config.json records about the protocol."""
        lay = self.layout
        return {"preset": self.preset.name, "kind": lay.kind, "num_fewshot": self.num_fewshot,
                "exemplar_file": self.exemplar_file, "exemplar_file_sha256": self.exemplar_file_sha256,
                "exemplars_sha256": self.exemplars_sha256, "joiner": lay.joiner,
                "query_joiner": lay.joiner if lay.query_joiner is None else lay.query_joiner, "query": lay.query,
                "system": lay.system, "stop": list(lay.stop), "bos": lay.bos,
                "default_max_new_tokens": lay.max_new_tokens}


def build_prompts(benchmark: str, preset: str | Preset = "chat", *, fewshot: Sequence[dict | Example] | None = None,
                  fewshot_file: str | os.PathLike | None = None, num_fewshot: int | None = None) -> PromptBuilder:
    """The :class:`PromptBuilder` of ``preset`` for ``benchmark``.

    Exemplars: ``fewshot`` (rows or Examples), else ``fewshot_file``, else the layout's own file;
    ``num_fewshot`` keeps the first k (0 = zero-shot). Chat layouts take no exemplars.
    """
    if benchmark not in FAMILY:
        raise BenchmarkDataError(f"Unknown benchmark {benchmark!r}. Choose one of: {', '.join(FAMILY)}.")
    p = get_preset(preset)
    lay = p.layout(benchmark)
    family = FAMILY[benchmark]
    path = sha = None
    if lay.kind == "chat" or (not lay.exemplars and fewshot is None and fewshot_file is None):
        if (fewshot or fewshot_file or num_fewshot) and lay.kind == "chat":
            raise BenchmarkDataError(
                f"Prompt preset {p.name!r} is a chat-template preset and takes no few-shot exemplars "
                f"(num_fewshot={num_fewshot!r}, fewshot_file={fewshot_file!r}). Use deepseek-fewshot for k-shot prompts."
            )
        rows: list[dict] = []
    elif fewshot is not None:
        rows = [exemplar_row(r, family) for r in fewshot]
    else:
        src = os.fspath(fewshot_file) if fewshot_file is not None else lay.exemplars
        path = os.path.abspath(src) if (fewshot_file is not None or os.path.isabs(src)) else asset_path(src)
        rows = [exemplar_row(r, family) for r in read_jsonl(path)]
        sha = file_sha256(path)
    if num_fewshot is not None:
        if num_fewshot < 0 or num_fewshot > len(rows):
            raise BenchmarkDataError(
                f"num_fewshot={num_fewshot}, but the exemplars of preset {p.name!r} for {benchmark} number {len(rows)}. "
                f"Use 0..{len(rows)}, or give a longer --fewshot-file."
            )
        rows = rows[:num_fewshot]
    if rows and not lay.shot:
        raise BenchmarkDataError(f"Prompt preset {p.name!r} has no shot format for {benchmark}; it is zero-shot.")
    joined = lay.joiner.join(fill(lay.shot, r) for r in rows)
    qj = lay.joiner if lay.query_joiner is None else lay.query_joiner
    prefix = joined + qj if rows else ""
    return PromptBuilder(preset=p, benchmark=benchmark, layout=lay, prefix=prefix, num_fewshot=len(rows),
                         exemplar_file=path, exemplar_file_sha256=sha)


def build_preset(benchmark: str, preset: str | Preset, fewshot: Sequence[dict | Example] | None = None) -> PromptBuilder:
    """``build_prompts(benchmark, preset, fewshot=...)`` (the name of earlier releases)."""
    return build_prompts(benchmark, preset, fewshot=fewshot)
