"""The ``deepseek`` scoring mode: DeepSeekMath's own answer rules, rebuilt on this project's parts.

The rules follow ``evaluation/data_processing/answer_extraction.py`` and ``evaluation/eval/``
(``eval_script.py``, ``eval_utils.py``) of ``deepseek-ai/DeepSeek-Math`` (read, not copied).

**Extraction** (``deepseek_answers(text, benchmark, question, fewshot)``):

* GSM8K few-shot: the completion is cut at its first ``"Q: "``; the answer is the last number.
* Everything else: the first hit of
  1. the text between ``"final answer is $"`` and ``"$. I hope"`` (Minerva's closing line);
  2. every ``\\boxed{...}`` (all of them, in order; a ``%`` right after the box is kept);
  3. the text after the last ``"he answer is"``;
  4. the last number.
  Each answer keeps its first line, loses a leading ``:`` and trailing ``.`` / ``/``.
  MATH few-shot completions are cut at their first ``"Problem:"`` first.
* MATH answers become a list: split at commas when the question says "separated by commas" and
  the answer has no brackets, and at ``\\text{ and }``. The gold is split the same way.

**Comparison** (``deepseek_equal(pred, gold)``), first rule that applies:

1. equal strings -> correct;
2. both plain numbers (commas dropped; ``50%`` / ``50\\%`` = 0.5): correct when
   ``|pred - g| <= 1e-3`` for some ``g`` in ``{gold, gold / 100, gold * 100}`` (percent
   rescaling), else wrong;
3. both bracketed ``(..)`` / ``[..]`` with the same number of comma-separated parts: part by part;
4. both ``pmatrix`` / ``bmatrix`` of the same shape: entry by entry;
5. equations: ``a = b`` vs ``c = d`` compare ``a - (b)`` with ``±(c - (d))``; ``x = 5`` (a left
   side of at most 2 characters) vs ``5`` compares the right side;
6. symbolic: ``trl_grpo_plus.rewards.math.is_equivalent`` (math-verify, killable worker), or, for
   two answers that are plain fractions / decimals / percents, ``|pred - gold| <= 1e-3``.

Lists (MATH): duplicates dropped from both; only the last ``len(gold)`` predictions count; correct
when every prediction matches some gold item and every gold item some prediction.

Deviations from DeepSeekMath's code, on purpose:

* in GSM8K few-shot completions a number is read with its commas (``1,000`` is 1000, as their
  other extractors read it; their few-shot GSM8K regex reads ``000``), and a ``-`` that follows a
  digit is a binary minus (``145-15`` ends in ``15``, not ``-15``);
* step 6 uses math-verify where they call sympy's ``parse_latex`` + ``simplify`` + ``N()``; the
  1e-3 tolerance on expressions with radicals or pi (their ``N()``) is not reproduced: such
  answers must be exactly equivalent here;
* their LaTeX clean-up (``strip_string``: units, ``\\left``, ``\\dfrac`` ...) is left to
  math-verify's normalisation.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["DeepSeekScorer", "deepseek_answers", "deepseek_equal", "deepseek_list_equal"]

ABS_TOL = 1e-3

# a number: digit runs joined by commas (the commas are dropped), optional decimals, optional sign
_NUMBER_RE = re.compile(r"-?\d+(?:,\d+)*(?:\.\d+)?|-?\.\d+")
_PLAIN_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}|(-?)\\[dt]?frac(\d)(\d)|(-?\d+)\s*/\s*(\d+)")
_AND_RE = re.compile(r"\\text\{\s*and\s*\}")


def _numbers(text: str) -> list[str]:
    """Numbers in ``text``; a ``-`` after a digit or ``)`` (spaces between allowed) is a binary minus."""
    out = []
    for m in _NUMBER_RE.finditer(text):
        num = m.group(0)
        if num.startswith("-") and text[: m.start()].rstrip()[-1:] in tuple("0123456789)"):
            num = num[1:]
        out.append(num)
    return out


def _boxed_all(text: str) -> list[str]:
    out = []
    for piece in text.split("boxed{")[1:]:
        depth = 0
        for i, ch in enumerate(piece):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    out.append(piece[:i] + "%" if piece[i + 1 : i + 2] == "%" else piece[:i])
                    break
    return out


def _clean(ans: str) -> str:
    ans = ans.strip().split("\n")[0].lstrip(":").rstrip(".").rstrip("/")
    return ans.strip()


def _split_list(ans: str, question: str) -> list[str]:
    if "separated by commas" in (question or "") and not any(ch in ans for ch in "()[]"):
        return [a.strip() for a in ans.split(",")]
    if _AND_RE.search(ans):
        return [a.strip() for a in _AND_RE.split(ans)]
    return [ans.strip()]


def deepseek_answers(text: str, benchmark: str, question: str = "", fewshot: bool = False) -> list[str]:
    """DeepSeekMath's answers of a completion (a list; empty when nothing is found)."""
    if not isinstance(text, str):
        return []
    if benchmark == "gsm8k" and fewshot:
        nums = _numbers(text.split("Q: ", 1)[0])
        return [nums[-1].replace(",", "")] if nums else []
    if benchmark != "gsm8k" and fewshot:
        text = text.split("Problem:", 1)[0]
    if "final answer is $" in text and "$. I hope" in text:
        preds = [text.split("final answer is $", 1)[1].split("$. I hope", 1)[0]]
    elif "boxed" in text:
        preds = _boxed_all(text)
    elif "he answer is" in text:
        preds = [text.split("he answer is")[-1]]
    else:
        nums = _numbers(text)
        preds = [nums[-1].replace(",", "")] if nums else []
    preds = [p for p in (_clean(p) for p in preds) if p]
    if benchmark == "gsm8k":
        return preds[-1:]
    out: list[str] = []
    for p in preds:
        out.extend(_split_list(p, question))
    return [a for a in out if a]


def _as_number(s: str) -> float | None:
    """A plain number (commas dropped; a trailing ``%`` or ``\\%`` divides by 100), else None."""
    s = s.replace(",", "").strip()
    scale = 1.0
    if s.endswith("%"):
        s, scale = s[:-1].rstrip("\\").strip(), 0.01
    if not _PLAIN_RE.fullmatch(s):
        return None
    return float(s) * scale


def _as_fraction_value(s: str) -> float | None:
    """A plain number, or one simple fraction (``\\frac{a}{b}``, ``\\frac12``, ``a/b``)."""
    n = _as_number(s)
    if n is not None:
        return n
    m = _FRAC_RE.fullmatch(s.strip().strip("$").strip())
    if not m:
        return None
    if m.group(2) is not None:
        sign, a, b = m.group(1), m.group(2), m.group(3)
    elif m.group(5) is not None:
        sign, a, b = m.group(4), m.group(5), m.group(6)
    else:
        sign, a, b = "", m.group(7), m.group(8)
    if int(b) == 0:
        return None
    v = float(Fraction(int(a), int(b)))
    return -v if sign else v


def _symbolic_equal(pred: str, gold: str) -> bool:
    a, b = _as_fraction_value(pred), _as_fraction_value(gold)
    if a is not None and b is not None:
        return math.isclose(a, b, abs_tol=ABS_TOL)
    from trl_grpo_plus.rewards.math import is_equivalent

    return is_equivalent(pred, gold)


_MATRIX_OPEN = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_CLOSE = ("\\end{pmatrix}", "\\end{bmatrix}")


def _matrix_cells(s: str) -> list[list[str]] | None:
    if not (s.startswith(_MATRIX_OPEN) and s.endswith(_MATRIX_CLOSE)):
        return None
    body = s[len("\\begin{pmatrix}") : -len("\\end{pmatrix}")]
    return [[c.strip() for c in line.split("&")] for line in body.split("\\\\") if line.strip()]


def deepseek_equal(pred: str, gold: str) -> bool:
    """DeepSeekMath's ``math_equal`` rules (see the module docstring); never raises."""
    try:
        return _equal(str(pred).strip(), str(gold).strip())
    except Exception:  # an answer that breaks a rule is wrong, not an error
        return False


def _equal(pred: str, gold: str) -> bool:
    if pred == gold and pred:
        return True
    p, g = _as_number(pred), _as_number(gold)
    if p is not None and g is not None:
        return any(math.isclose(p, ref, abs_tol=ABS_TOL) for ref in (g / 100, g, g * 100))
    if not pred:
        return False
    if re.match(r"[(\[].+[)\]]$", pred) and re.match(r"[(\[].+[)\]]$", gold):
        ps, gs = pred[1:-1].split(","), gold[1:-1].split(",")
        if len(ps) == len(gs) and all(_equal(a.strip(), b.strip()) for a, b in zip(ps, gs)):
            return True
    pm, gm = _matrix_cells(pred), _matrix_cells(gold)
    if pm is not None and gm is not None:
        if [len(r) for r in pm] == [len(r) for r in gm] and all(
                _equal(a, b) for pr, gr in zip(pm, gm) for a, b in zip(pr, gr)):
            return True
    if pred.count("=") == 1 and gold.count("=") == 1:
        pl, pr = pred.split("=")
        gl, gr = gold.split("=")
        lhs, rhs = f"{pl.strip()} - ({pr.strip()})", f"{gl.strip()} - ({gr.strip()})"
        if _symbolic_equal(lhs, rhs) or _symbolic_equal(f"-({lhs})", rhs):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2 and "=" not in gold:
        if _equal(pred.split("=")[1].strip(), gold):
            return True
    elif gold.count("=") == 1 and len(gold.split("=")[0].strip()) <= 2 and "=" not in pred:
        if _equal(pred, gold.split("=")[1].strip()):
            return True
    return _symbolic_equal(pred, gold)


def _dedupe(xs: list[str]) -> list[str]:
    out: list[str] = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


def deepseek_list_equal(preds: list[str], golds: list[str]) -> bool:
    """MATH's list rule: both deduplicated, the last ``len(golds)`` predictions kept, and a
    one-to-one cover: every prediction matches some gold item and every gold item some prediction."""
    golds = _dedupe([g for g in golds if g])
    preds = _dedupe(preds)[-len(golds):] if golds else []
    if not preds or not golds:
        return False
    pm, gm = set(), set()
    for i, p in enumerate(preds):
        for j, g in enumerate(golds):
            if deepseek_equal(p, g):
                pm.add(i)
                gm.add(j)
    return len(pm) == len(preds) and len(gm) == len(golds)


class DeepSeekScorer:
    """Scores completions of one benchmark by the rules above: ``score(text, gold, question)``
    -> ``(1.0 | 0.0, shown answer or None)``."""

    def __init__(self, benchmark: str, *, fewshot: bool):
        self.benchmark = benchmark
        self.fewshot = fewshot

    def gold_items(self, gold: str, question: str) -> list[str]:
        if self.benchmark == "gsm8k":
            return [str(gold).replace(",", "").strip()]
        return [a for a in _split_list(str(gold), question) if a]

    def score(self, text: str, gold: str, question: str = "") -> tuple[float, str | None]:
        preds = deepseek_answers(text, self.benchmark, question, self.fewshot)
        if not preds:
            return 0.0, None
        shown = ", ".join(preds)
        if self.benchmark == "gsm8k":
            return (1.0 if deepseek_equal(preds[-1], self.gold_items(gold, question)[0]) else 0.0), shown
        return (1.0 if deepseek_list_equal(preds, self.gold_items(gold, question)) else 0.0), shown
