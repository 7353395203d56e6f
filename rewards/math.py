"""The ``math`` verifier: final-answer extraction + math-verify/sympy equivalence, off the main thread.

Extraction priority (``extract_answer``), first hit wins:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces; also the brace-less ``\\boxed 5``);
2. the last ``<answer>...</answer>``;
3. the last "final answer is ..." (also "final answer: ...");
4. the last "the answer is ..." (also "answer: ...");
5. the last ``#### ...`` line (GSM8K style);
6. optionally (``fallback_last_number=True``, the default) the last number in the text.

Equivalence (``is_equivalent``) parses both answers with math-verify (LaTeX -> sympy) and compares
them with math-verify's ``verify`` (numbers, fractions, roots, symbolic identities, sets, intervals
with their open/closed ends, ordered tuples, matrices, equations ``x=3`` vs ``3``, percent, units
and ``\\text{}``). What we add:

* decimals are made exact before comparing, so a decimal counts only when it *is* the value
  (0.25 = 1/4, 72.0 = 72; but 3.14159265 != pi, 1.41 != sqrt 2, 0.333333 != 1/3);
* multiple-choice golds (``C``, ``(C)``, ``\\text{(C)}``) are compared as letters;
* timeouts that work in any thread: the work runs in a killable worker pool (``_math_pool``);
* the gold is parsed once per group of completions, and groups are scored in parallel.

Not covered: free-form text answers beyond exact string match after math-verify's normalisation,
answers that need the problem statement (e.g. "the larger root"), and approximate answers to
problems that ask for a rounded decimal when the gold is exact (those score 0).
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction

from . import _math_pool
from .base import Verifier
from .registry import register_verifier

logger = logging.getLogger(__name__)

__all__ = ["MathVerifier", "extract_answer", "extract_boxed", "is_equivalent", "quick_verdict", "score_answers"]

# Completions longer than this are only searched in their last part for anchors/numbers: the final
# answer is at the end, and it bounds the regex work on a runaway (1 MB) completion.
_TAIL_CHARS = 20_000
# A longer "answer" is a runaway extraction, scored wrong without parsing it.
MAX_ANSWER_CHARS = 4_000

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*", re.I)
_THE_ANSWER_RE = re.compile(r"(?:the\s+answer\s+is|\banswer\s*:)\s*:?\s*", re.I)
_HASH_RE = re.compile(r"####\s*(.+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
# $$..$$, $..$ (an escaped \$ inside does not close it), \(..\), \[..\]
_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)(?<!\\)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)


_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)  # an escape (\{ \} \\) or a brace


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """``{open position: close position}`` for the balanced braces of ``text[start:]``, in one pass."""
    stack, pairs = [], {}
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        c = m.group(0)
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` (balanced braces) or ``\\boxed X``.

    A box that is unbalanced or empty is skipped for the one before it. Linear time: braces are
    matched in one pass, so a completion of 100,000 unclosed boxes costs no more than reading it.
    """
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    pairs = None
    for m in reversed(boxes):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if pairs is None:
                pairs = _matching_braces(text, boxes[0].end())
            close = pairs.get(i)
            if close is not None:
                content = text[i + 1:close].strip()
                if content:
                    return content
            continue  # unbalanced or empty: try an earlier box
        if i > m.end():  # "\boxed 5" : up to the next $ or whitespace
            tail = re.match(r"[^\s$]+", text[i:i + 1000])
            if tail:
                return tail.group(0)
    return None


def _answer_tags_from_last(text: str, limit: int = 16):
    """Contents of ``<answer>...</answer>`` pairs, last first (found with rfind: linear time)."""
    lower = text.lower()
    end = len(lower)
    for _ in range(limit):
        close = lower.rfind("</answer>", 0, end)
        if close < 0:
            return
        open_ = lower.rfind("<answer>", 0, close)
        if open_ < 0:
            return
        yield text[open_ + len("<answer>"):close]
        end = open_


def _clean_sentence_answer(s: str) -> str | None:
    """The answer after an anchor phrase: a boxed/math span if present, else the rest of the line."""
    s = s.strip()
    boxed = extract_boxed(s)
    if boxed:
        return boxed
    m = _MATH_SPAN_RE.match(s)
    if m:
        return next(g for g in m.groups() if g is not None).strip() or None
    line = s.split("\n", 1)[0].strip()
    previous = None
    while line != previous:  # peel markdown bold, a full stop and $...$ in any order
        previous = line
        line = re.sub(r"^\*\*|\*\*$", "", line).strip().rstrip(".").strip().strip("$").strip()
    return line or None


def extract_answer(text, *, fallback_last_number: bool = True) -> str | None:
    """The final answer in ``text`` (a completion), by the priority in the module docstring."""
    if not isinstance(text, str) or not text:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
    boxed = extract_boxed(text)
    if boxed:
        return boxed
    tail = text[-_TAIL_CHARS:]
    for content in _answer_tags_from_last(tail):
        ans = _clean_sentence_answer(content)
        if ans:
            return ans
    for anchor in (_FINAL_RE, _THE_ANSWER_RE):
        hits = list(anchor.finditer(tail))
        for m in reversed(hits):
            ans = _clean_sentence_answer(tail[m.end():])
            if ans:
                return ans
    hashes = _HASH_RE.findall(tail)
    if hashes:
        ans = hashes[-1].strip().rstrip(".").strip()
        if ans:
            return ans
    if fallback_last_number:
        nums = _NUMBER_RE.findall(tail)
        if nums:
            return nums[-1].rstrip(".")
    return None


def score_answers(groups: list[tuple[str, list[str]]], *, timeout_s: float = 1.0,
                  gold_timeout_s: float | None = None):
    """Check many (gold, [pred answer, ...]) groups in the worker pool.

    Returns, per group, ``(gold_status, verdicts)``: ``gold_status`` is True, False (unparsable) or
    "timeout"; ``verdicts`` holds True / False / "timeout" / "crash" per prediction (None when the
    gold could not be used). Settled without a worker (``quick_verdict``): answers equal as strings
    after meaning-preserving normalisation, and pairs of plain decimal numbers. Repeated predictions
    in a group (common in GRPO: many samples agree) are checked once.
    """
    todo, index = [], []
    out = []
    for gi, (gold, preds) in enumerate(groups):
        verdicts = [None] * len(preds)
        unique: dict[str, list[int]] = {}
        for pi, pred in enumerate(preds):
            try:
                quick = quick_verdict(pred, gold)
            except Exception:  # e.g. an integer too long for int(); let the worker decide
                quick = None
            if quick is not None:
                verdicts[pi] = quick
            else:
                unique.setdefault(pred, []).append(pi)
        out.append([True, verdicts])
        if unique:
            todo.append((gold, list(unique)))
            index.append((gi, list(unique.values())))
    if todo:
        results = _math_pool.get_pool().run(todo, timeout_s, gold_timeout_s)
        for (gi, positions), (status, verdicts) in zip(index, results):
            out[gi][0] = status
            for pis, v in zip(positions, verdicts):
                for pi in pis:
                    out[gi][1][pi] = v
    return [tuple(o) for o in out]


_NORM_DROP_RE = re.compile(r"\\left(?=[(\[|.]|\\\{)|\\right(?=[)\]|.]|\\\})|\\[,!;: ]|\s+|^\$+|\$+$")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")


def _norm(s: str) -> str:
    """Meaning-preserving LaTeX normalisation for the string fast path."""
    s = _NORM_DROP_RE.sub("", s or "")
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def quick_verdict(pred: str, gold: str) -> bool | None:
    """A verdict that needs no parser, or None: equal normalised strings are equivalent; two plain
    decimal numbers are compared exactly (``50`` != ``5``, ``72.0`` = ``72``); a prediction longer
    than ``MAX_ANSWER_CHARS`` is wrong."""
    if len(pred) > MAX_ANSWER_CHARS:
        return False  # not an answer: a runaway extraction (a 20,000-digit "number", a pasted log)
    g, p = _norm(gold), _norm(pred)
    if g and g == p:
        return True
    if _PLAIN_NUMBER_RE.fullmatch(g) and _PLAIN_NUMBER_RE.fullmatch(p) and max(len(g), len(p)) <= 4000:
        return Fraction(g) == Fraction(p)
    return None


def is_equivalent(pred, gold, *, timeout_s: float = 1.0) -> bool:
    """Is the answer ``pred`` equivalent to ``gold``? Both are answer strings (see ``extract_answer``).

    Never raises: anything unparsable, timed out or broken is False. Safe from any thread.
    """
    if not isinstance(pred, str) or not isinstance(gold, str) or not pred.strip() or not gold.strip():
        return False
    try:
        ((_, verdicts),) = score_answers([(_strip_nul(gold), [_strip_nul(pred)])], timeout_s=timeout_s)
    except Exception as exc:
        logger.warning("is_equivalent failed: %r", exc)
        return False
    return verdicts[0] is True


def _warm_pool() -> None:
    try:
        _math_pool.get_pool().start()
    except Exception as exc:  # reported again, and counted, when scoring needs the pool
        logger.warning("math verifier: could not start the worker pool: %r", exc)


def _strip_nul(s: str) -> str:
    return s.replace("\x00", "")


@register_verifier("math")
class MathVerifier(Verifier):
    """TRL reward function: 1.0 when the completion's final answer equals the gold, else 0.0.

    Options: ``gold_column`` (default ``"answer"``), ``timeout_s`` per item (default 1.0),
    ``fallback_last_number`` (default True), ``warm_start`` (default True: start the worker pool
    in the background on construction), ``gold_timeout_s`` (default ``max(timeout_s, 5.0)``: a
    gold is trusted data, parsed once per group, and a cold parser can need ~1 s), ``name``.

    The gold may be a bare answer (``\\frac{1}{2}``) or a full solution: when it contains a
    ``\\boxed{}`` or a ``####`` line, the answer is extracted from it first.

    Scores: None when the gold is missing or unparsable (TRL skips it). A completion without an
    extractable answer, or whose check timed out, scores 0.0. Everything is counted in ``stats``:
    ``correct``, ``incorrect``, ``no_answer``, ``timeouts``, ``crashes``, ``gold_missing``,
    ``gold_unparsable``, ``gold_timeouts`` (plus the base counters).
    """

    def __init__(self, *, gold_column: str = "answer", timeout_s: float = 1.0,
                 fallback_last_number: bool = True, warm_start: bool = True,
                 gold_timeout_s: float | None = None, name: str | None = None):
        super().__init__(name=name)
        self.gold_column = gold_column
        self.timeout_s = float(timeout_s)
        self.gold_timeout_s = gold_timeout_s
        self.fallback_last_number = fallback_last_number
        if warm_start:  # start the worker pool (a few seconds) while the trainer generates
            threading.Thread(target=_warm_pool, name="math-verifier-warm-start", daemon=True).start()

    def gold_answer(self, gold) -> str | None:
        if gold is None:
            return None
        if not isinstance(gold, str):
            gold = str(gold)
        gold = _strip_nul(gold).strip()
        if "\\boxed" in gold or "\\fbox" in gold or "####" in gold or "<answer>" in gold:
            gold = extract_answer(gold, fallback_last_number=False) or ""
        return gold or None

    def score_batch(self, prompts, completions: list[str], columns: dict) -> list[float | None]:
        n = len(completions)
        golds = columns.get(self.gold_column)
        if not isinstance(golds, (list, tuple)):
            golds = [golds] * n
        scores: list[float | None] = [None] * n
        groups: dict[str, list[int]] = {}
        preds: dict[int, str] = {}
        for i in range(n):
            gold = self.gold_answer(golds[i] if i < len(golds) else None)
            if gold is None:
                self.stats["gold_missing"] += 1
                continue
            pred = extract_answer(completions[i], fallback_last_number=self.fallback_last_number)
            if pred is None:
                self.stats["no_answer"] += 1
                scores[i] = 0.0
                continue
            preds[i] = pred
            groups.setdefault(gold, []).append(i)
        items = list(groups.items())
        results = score_answers([(g, [preds[i] for i in idx]) for g, idx in items], timeout_s=self.timeout_s,
                                gold_timeout_s=self.gold_timeout_s)
        for (gold, idx), (status, verdicts) in zip(items, results):
            for i, v in zip(idx, verdicts):
                if v is None:
                    self.stats["gold_timeouts" if status == "timeout" else "gold_unparsable"] += 1
                    scores[i] = None
                elif v is True:
                    self.stats["correct"] += 1
                    scores[i] = 1.0
                else:
                    key = {_math_pool.TIMEOUT: "timeouts", _math_pool.CRASH: "crashes"}.get(v, "incorrect")
                    self.stats[key] += 1
                    scores[i] = 0.0
        return scores
