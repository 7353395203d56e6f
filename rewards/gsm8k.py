"""The ``gsm8k`` verifier: exact numeric match of the final number, with GSM8K's number rules.

Number rules (``parse_number``): commas and other thousands separators (``1,000``, ``1 000``,
``1\\,000``, ``1{,}000``), a leading ``$`` or trailing unit/period, ``72.0`` = ``72``, negatives
(ASCII ``-`` or Unicode minus), and simple fractions ``3/4``. Values compare exactly (as fractions),
so ``0.33`` != ``1/3`` and ``5`` != ``500``.

Gold (``extract_gold``): either a raw GSM8K solution (the text after the last ``####``) or a plain
number. Prediction (``extract_answer(text, mode="strict"|"flexible")``): the number after the last
``####``; else the answer the ``math`` extractor reads (a box, ``<answer>`` tags, "the answer is",
"final answer", a math span that is one number, a completion that is nothing but a number), when it
is one number (``x = 18`` and ``18 dollars`` are 18; ``\\frac{1+\\sqrt{5}}{2}`` is no number). Only
``mode="flexible"`` then takes the last number standing alone in the prose (never one cut out of a
word, like ``AZYUK2A``, or out of LaTeX).

Pure Python, no worker process: number parsing cannot hang.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .base import Verifier
from .math import extract_with_tier, resolve_mode
from .registry import register_verifier

__all__ = ["GSM8KVerifier", "extract_answer", "extract_gold", "numbers_match", "parse_number"]

_TAIL_CHARS = 20_000
# One number, as written in a completion. Only bounded optional whitespace (``\s?``): a pattern that
# starts with ``\s*`` rescans a long run of spaces from every position (quadratic on a 1 MB input).
_NUM = (
    r"(?:[-−]\s?)?\$?\s?(?:\d{1,3}(?:(?:,|\\,|\{,\}| |\u2009|\u202f)\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+)?"
    r"|(?:[-−]\s?)?\$?\.\d+"
)
_NUM_RE = re.compile(_NUM)
# The same, standing alone: not glued to a letter, a backslash, a brace, ^ or _ on either side.
_PROSE_NUM_RE = re.compile(rf"(?<![\w\\{{}}^_.,/])(?:{_NUM})(?![\w{{}}^_]|[.,/]\d)")
_LABEL_RE = re.compile(r"^[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=\s*")


def parse_number(text) -> Fraction | None:
    """The single number in ``text`` as an exact Fraction, or None if it is not one number."""
    if text is None:
        return None
    s = str(text).replace("\x00", "").strip()
    # LaTeX and markup wrappers: \boxed{..}, \text{..}, $..$, **..**
    s = re.sub(r"\\(?:boxed|text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"^(-?)\\[dt]?frac\s*\{(\d+)\}\s*\{(\d+)\}$", r"\1\2/\3", s.strip())  # \frac{3}{4} -> 3/4
    s = s.replace("\\$", "$").replace("\\%", "%").replace("\\!", "")
    s = s.strip().strip("*").strip()
    s = s.strip("$").strip()
    s = re.sub(r"^(?:\\\(|\\\[)|(?:\\\)|\\\])$", "", s).strip()
    s = s.rstrip(".").strip()
    if len(s) > 200:  # a number, even with a unit, is short; this also bounds the regex work
        return None
    s = re.sub(r"\s*(?:%|[A-Za-z][A-Za-z .]*)$", "", s)  # trailing unit words / percent sign
    s = s.rstrip(".").strip()
    s = s.replace("−", "-").replace("$", "")
    s = re.sub(r"\\,|\{,\}|[\u2009\u202f]", ",", s)
    neg = s.startswith("-")
    s = s.lstrip("-").strip()
    if not s:
        return None
    if "," in s:
        if not re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
            return None
        s = s.replace(",", "")
    elif " " in s:
        if not re.fullmatch(r"\d{1,3}(?: \d{3})+(?:\.\d+)?", s):
            return None
        s = s.replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+))?", s)
    if not m:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            den = int(m.group(2))
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError):
        return None
    return -value if neg else value


def numbers_match(pred, gold) -> bool:
    """Exact numeric equality under the rules above; False when either side is not a number."""
    a, b = parse_number(pred), parse_number(gold)
    return a is not None and b is not None and a == b


def extract_gold(solution) -> str | None:
    """Gold number string from a raw GSM8K solution (after the last ``####``) or a plain number."""
    if solution is None:
        return None
    s = str(solution)
    if "####" in s:
        s = s.rsplit("####", 1)[1]
    s = s.strip().split("\n", 1)[0].strip()
    return s if parse_number(s) is not None else None


def _one_number(ans: str, tier: int) -> str | None:
    """``ans`` (an extracted answer) when it is one number; ``x = 18`` -> ``18``. A math span (tier 3)
    must be nothing but the number: in GSM8K prose ``$`` is money (``costs $5 and $10``)."""
    ans = _LABEL_RE.sub("", ans.strip(), count=1)
    if tier == 3:
        return ans if _NUM_RE.fullmatch(ans.strip()) and parse_number(ans) is not None else None
    return ans if parse_number(ans) is not None else None


def extract_answer(text, *, mode: str = "strict", fallback_last_number: bool | None = None) -> str | None:
    """The final number of a completion (see the module docstring for the order).
    ``fallback_last_number`` is a deprecated alias of ``mode`` (True -> ``"flexible"``)."""
    mode = resolve_mode(mode, fallback_last_number, owner="gsm8k")
    if not isinstance(text, str) or not text:
        return None
    tail = text[-_TAIL_CHARS:].replace("\x00", "")
    if "####" in tail:
        after = tail.rsplit("####", 1)[1]
        m = _NUM_RE.search(after)
        if m:
            return m.group(0).strip()
    tier, ans = extract_with_tier(text, mode="strict")
    if ans is not None:
        number = _one_number(ans, tier)
        if number is not None:
            return number
    if mode == "flexible":
        nums = [n for n in _PROSE_NUM_RE.findall(tail) if parse_number(n) is not None]
        if nums:
            return nums[-1].strip()
    return None


@register_verifier("gsm8k")
class GSM8KVerifier(Verifier):
    """TRL reward function: 1.0 when the completion's final number equals the gold number, else 0.0.

    Options: ``gold_column`` (default ``"answer"``; a raw GSM8K solution or a plain number),
    ``mode`` (``"strict"``, the default: only an explicit final answer counts; ``"flexible"``: also
    the last number standing alone in the prose), ``name``. ``fallback_last_number`` is a deprecated
    alias of ``mode`` (True -> ``"flexible"``). None (counted as ``gold_missing``) when the gold has no
    number; ``correct``, ``incorrect`` and ``no_answer`` are counted in ``stats``.
    """

    def __init__(self, *, gold_column: str = "answer", mode: str = "strict",
                 fallback_last_number: bool | None = None, name: str | None = None):
        super().__init__(name=name)
        self.mode = resolve_mode(mode, fallback_last_number, owner="get_verifier('gsm8k')")
        self.gold_column = gold_column

    @property
    def fallback_last_number(self) -> bool:
        """Deprecated view of ``mode``: True when ``mode == "flexible"``."""
        return self.mode == "flexible"

    def score(self, completion: str, **row) -> float | None:
        gold = parse_number(extract_gold(row.get(self.gold_column)))
        if gold is None:
            self.stats["gold_missing"] += 1
            return None
        value = parse_number(extract_answer(completion, mode=self.mode))
        if value is None:
            self.stats["no_answer"] += 1
            return 0.0
        ok = value == gold
        self.stats["correct" if ok else "incorrect"] += 1
        return 1.0 if ok else 0.0
