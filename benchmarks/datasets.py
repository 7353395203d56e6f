"""Benchmark datasets: where each one comes from, and how a raw row becomes an :class:`Example`.

Every benchmark loads from the Hugging Face Hub by default and from a local JSONL file with
``data_file=`` (``--data-file``). Local files use the same field names as the hub versions.

| benchmark | hub id (config, split) | rows | fields used |
|---|---|---|---|
| ``gsm8k`` | ``openai/gsm8k`` (``main``, ``test``) | 1319 | ``question``, ``answer`` (gold = text after the last ``####``, commas removed) |
| ``math500`` | ``HuggingFaceH4/MATH-500`` (``test``) | 500 | ``problem``, ``answer``, ``subject``, ``level``, ``unique_id`` |
| ``math`` | ``EleutherAI/hendrycks_math`` (7 subject configs, ``test``) | 5000 | ``problem``, ``solution``, ``type``/``subject``, ``level`` |

Few-shot exemplars are not drawn from a train split: each prompt preset ships its own (see
``presets.py``; the DeepSeekMath exemplars live in ``trl_grpo_plus/assets/prompts``).

Full MATH from ``EleutherAI/hendrycks_math`` has no ``answer`` column: the gold is the content of the
last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``solution``, braces balanced. A row that already has
``answer`` (MATH-500, or a converted local file) keeps it. ``level`` may be ``"Level 3"`` or ``3``.
Rows whose level is ``"Level ?"`` (a handful in the raw dataset) get ``level=None``.

Ids: ``unique_id`` when the row has one (MATH-500), else ``idx`` / ``id`` when present, else
``"<benchmark>-<row index>"`` (index in load order, which is fixed for a given source).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

HENDRYCKS_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


class BenchmarkDataError(ValueError):
    """A dataset row or file that cannot be turned into examples; the message names the fix."""


@dataclass(frozen=True)
class Example:
    """One benchmark problem, independent of its source format."""

    id: str
    question: str
    gold: str
    solution: str | None = None  # reference solution (used for few-shot exemplars)
    subject: str | None = None
    level: int | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    hub_id: str
    hub_configs: tuple[str | None, ...]
    test_split: str
    verifier: str  # name in trl_grpo_plus.rewards
    question_field: str
    to_example: Callable[[dict, int, str], Example]


# --------------------------------------------------------------------------------------------------
# gold extraction


def gsm8k_gold(answer: str) -> str:
    """GSM8K gold: the text after the last ``####`` of the reference answer, commas removed.

    >>> gsm8k_gold("He pays 2,000 - 500 = <<2000-500=1500>>1500.\\n#### 1,500")
    '1500'
    """
    if not isinstance(answer, str) or "####" not in answer:
        raise BenchmarkDataError(
            f"GSM8K field 'answer' must be a reference solution ending in '#### <number>', got {answer!r:.80}. "
            "Use the openai/gsm8k 'main' config (or a JSONL file with the same 'question'/'answer' fields)."
        )
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise BenchmarkDataError(f"GSM8K field 'answer' has nothing after '####': {answer!r:.80}.")
    return gold


def gsm8k_rationale(answer: str) -> str:
    """The reasoning part of a GSM8K reference answer: text before ``####``, calculator annotations
    ``<<...>>`` removed, lines joined with spaces (for few-shot exemplars)."""
    body = answer.rsplit("####", 1)[0]
    body = re.sub(r"<<[^<>]*>>", "", body)
    return " ".join(line.strip() for line in body.splitlines() if line.strip())


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (braces balanced), or the
    brace-less form ``\\boxed 5`` up to the next ``$``; ``None`` when there is none."""
    if not isinstance(text, str):
        return None
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)\s*", text)]
    for m in reversed(starts):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
            continue  # unbalanced: try an earlier one
        if text[m.start() : m.end()].startswith("\\boxed") and m.end() > m.start() + len("\\boxed"):
            rest = text[i:].split("$", 1)[0].strip()
            if rest:
                return rest
    return None


def parse_level(value: Any) -> int | None:
    """``3``, ``"3"`` or ``"Level 3"`` -> 3; ``"Level ?"``/``None`` -> ``None``."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


# --------------------------------------------------------------------------------------------------
# row -> Example


def _require(row: dict, field_name: str, benchmark: str, index: int) -> Any:
    if field_name not in row or row[field_name] is None:
        raise BenchmarkDataError(
            f"{benchmark}: row {index} has no field {field_name!r} (its fields: {sorted(row)}). "
            f"Give a file with the {benchmark} field names (see docs/evaluation.md), or pass a custom "
            "`to_example=` mapping to evaluate()."
        )
    return row[field_name]


def _row_id(row: dict, index: int, benchmark: str) -> str:
    for key in ("unique_id", "id", "idx"):
        if row.get(key) is not None:
            return str(row[key])
    return f"{benchmark}-{index}"


def gsm8k_example(row: dict, index: int, benchmark: str = "gsm8k") -> Example:
    question = _require(row, "question", benchmark, index)
    answer = _require(row, "answer", benchmark, index)
    return Example(
        id=_row_id(row, index, benchmark),
        question=str(question),
        gold=gsm8k_gold(answer),
        solution=gsm8k_rationale(answer),
    )


def math_example(row: dict, index: int, benchmark: str = "math") -> Example:
    problem = _require(row, "problem", benchmark, index)
    gold = row.get("answer")
    solution = row.get("solution")
    if gold is None or (isinstance(gold, str) and not gold.strip()):
        if solution is None:
            raise BenchmarkDataError(
                f"{benchmark}: row {index} has neither 'answer' nor 'solution' (its fields: {sorted(row)}). "
                "The gold answer is 'answer', or else the last \\boxed{...} of 'solution'."
            )
        gold = last_boxed(solution)
        if gold is None:
            raise BenchmarkDataError(
                f"{benchmark}: row {index} has no 'answer' and its 'solution' has no \\boxed{{...}}: "
                f"{str(solution)[-120:]!r}. Add an 'answer' field to the file."
            )
    subject = row.get("subject", row.get("type"))
    return Example(
        id=_row_id(row, index, benchmark),
        question=str(problem),
        gold=str(gold),
        solution=None if solution is None else str(solution),
        subject=None if subject is None else str(subject),
        level=parse_level(row.get("level")),
    )


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec(
        name="gsm8k",
        hub_id="openai/gsm8k",
        hub_configs=("main",),
        test_split="test",
        verifier="gsm8k",
        question_field="question",
        to_example=gsm8k_example,
    ),
    "math": BenchmarkSpec(
        name="math",
        hub_id="EleutherAI/hendrycks_math",
        hub_configs=HENDRYCKS_CONFIGS,
        test_split="test",
        verifier="math",
        question_field="problem",
        to_example=math_example,
    ),
    "math500": BenchmarkSpec(
        name="math500",
        hub_id="HuggingFaceH4/MATH-500",
        hub_configs=(None,),
        test_split="test",
        verifier="math",
        question_field="problem",
        to_example=math_example,
    ),
}


def get_spec(benchmark: str) -> BenchmarkSpec:
    if benchmark not in BENCHMARKS:
        raise BenchmarkDataError(
            f"Unknown benchmark {benchmark!r}. Choose one of: {', '.join(BENCHMARKS)}."
        )
    return BENCHMARKS[benchmark]


# --------------------------------------------------------------------------------------------------
# loading


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Rows of a JSONL file (a ``.json`` file holding one array also works). Errors name the line."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BenchmarkDataError(f"Data file {path!r} does not exist. Check the --data-file path.")
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".json"):
            data = json.load(fh)
            if not isinstance(data, list):
                raise BenchmarkDataError(f"{path}: a .json data file must hold a list of objects.")
            return data
        rows = []
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkDataError(f"{path}:{lineno}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
            if not isinstance(row, dict):
                raise BenchmarkDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


def load_hub_rows(hub_id: str, configs: Sequence[str | None], split: str) -> list[dict]:
    """Rows of ``hub_id`` for each config in order, concatenated (needs ``datasets`` and the hub)."""
    from datasets import load_dataset

    rows: list[dict] = []
    for config in configs:
        try:
            ds = load_dataset(hub_id, config, split=split) if config else load_dataset(hub_id, split=split)
        except Exception as exc:
            raise BenchmarkDataError(
                f"Could not load {hub_id!r} (config {config!r}, split {split!r}) from the Hugging Face Hub: "
                f"{type(exc).__name__}: {exc}. Offline? Pass a local JSONL with --data-file "
                "(same field names as the hub dataset)."
            ) from exc
        rows.extend(dict(r) for r in ds)
    return rows


def to_examples(rows: Iterable[dict], benchmark: str, to_example: Callable[[dict, int], Example] | None = None) -> list[Example]:
    """Map raw rows to :class:`Example` (custom ``to_example(row, index)`` when given); ids must be unique."""
    spec = get_spec(benchmark)
    out: list[Example] = []
    for i, row in enumerate(rows):
        if isinstance(row, Example):
            out.append(row)
            continue
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{benchmark}: row {i} is a {type(row).__name__}, expected a dict.")
        out.append(to_example(row, i) if to_example else spec.to_example(row, i, benchmark))
    if not out:
        raise BenchmarkDataError(
            f"{benchmark}: the dataset is empty (0 rows). Check --data-file / rows=, and that --limit is > 0."
        )
    seen: dict[str, int] = {}
    for i, ex in enumerate(out):
        if ex.id in seen:
            raise BenchmarkDataError(
                f"{benchmark}: duplicate id {ex.id!r} (rows {seen[ex.id]} and {i}). Ids key the resume "
                "file, so they must be unique: give each row a distinct 'id'."
            )
        seen[ex.id] = i
    return out


def load_examples(
    benchmark: str,
    *,
    data_file: str | os.PathLike | None = None,
    rows: Iterable[dict] | None = None,
    limit: int | None = None,
    to_example: Callable[[dict, int], Example] | None = None,
) -> list[Example]:
    """The test examples of ``benchmark``: from ``rows``, else ``data_file``, else the hub.

    ``limit`` keeps the first N (after mapping, so ids do not depend on the limit).
    """
    spec = get_spec(benchmark)
    if limit is not None and limit <= 0:
        raise BenchmarkDataError(f"limit must be a positive integer, got {limit}.")
    if rows is not None:
        raw = list(rows)
    elif data_file is not None:
        raw = read_jsonl(data_file)
    else:
        raw = load_hub_rows(spec.hub_id, spec.hub_configs, spec.test_split)
    examples = to_examples(raw, benchmark, to_example)
    return examples[:limit] if limit else examples
