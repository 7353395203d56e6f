"""The ``math`` verifier: final-answer extraction + math-verify/sympy equivalence, off the main thread.

Extraction (``extract_answer(text, mode="strict"|"flexible")``) reads the final answer the way a
careful grader would, in four tiers; within a tier the occurrence that comes *last* in the text wins:

1. an explicit final answer: the last group of ``\\boxed{...}``/``\\fbox{...}`` (several boxes
   separated only by commas, "and"/"or", ``\\quad`` or ``\\text{...}`` are one answer: ``\\boxed{1}``
   and ``\\boxed{-2}`` is the set ``1, -2``), the last ``<answer>...</answer>``, or the last
   "final answer is ..." / "final answer: ...";
2. "the answer is ..." / "answer: ...", or a ``#### ...`` line (GSM8K style);
3. the last LaTeX math span, ``$...$``, ``$$...$$``, ``\\(...\\)`` or ``\\[...\\]`` (spans joined by
   "and"/"or"/commas form one answer, as in math-verify); an inline span never crosses a line;
4. a completion that is nothing but an answer (one line, no prose): ``1 000``, ``\\frac13``, ``x = 3``.

``mode="strict"`` (the default, for training rewards) stops there: no answer is ever guessed out of
prose. ``mode="flexible"`` then takes the last number that stands alone in the prose (outside math
spans, not glued to a letter, a backslash, a brace, ``^`` or ``_``), so ``AZYUK2A`` and
``\\frac{1+\\sqrt{5}}{2}`` yield no number, while "so she pays 18 dollars" yields 18.

Equivalence (``is_equivalent``) parses both answers with math-verify (LaTeX -> sympy) and compares
them with math-verify's ``verify`` (numbers, fractions, roots, symbolic identities, sets, intervals
with their open/closed ends, ordered tuples, matrices, equations and relations, percent, units and
``\\text{}``). What we add:

* decimals are made exact before comparing, so a decimal counts only when it *is* the value
  (0.25 = 1/4, 72.0 = 72; but 3.14159265 != pi, 1.41 != sqrt 2, 0.333333 != 1/3); a repeating
  decimal ``0.\\overline{3}`` is the exact 1/3;
* ``e^{i\\pi}`` is read with ``i`` the imaginary unit; a set membership ``x \\in [-2, 7]`` equals the
  relation ``-2 \\le x \\le 7`` either way round; ``1 000`` is 1000;
* multiple-choice golds (``C``, ``(C)``, ``\\text{(C)}``) are compared as letters;
* timeouts that work in any thread: the work runs in a killable worker pool (``_math_pool``);
* the gold is parsed once per group of completions, and groups are scored in parallel.

Not covered: free-form text answers beyond exact string match after math-verify's normalisation,
answers that need the problem statement (e.g. "the larger root"), approximate answers to problems
that ask for a rounded decimal when the gold is exact (those score 0), and the European decimal
comma (``1,22`` is read as the list 1, 22, as in MATH's gold ``27,93``).
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from fractions import Fraction

from . import _math_pool
from .base import Verifier
from .registry import register_verifier

logger = logging.getLogger(__name__)

__all__ = ["MODES", "MathVerifier", "extract_answer", "extract_boxed", "extract_with_tier", "gold_answer_of",
           "is_equivalent", "quick_verdict", "resolve_mode", "score_answers"]

MODES = ("strict", "flexible")

# Completions longer than this are only searched in their last part: the final answer is at the
# end, and it bounds the regex work on a runaway (1 MB) completion.
_TAIL_CHARS = 20_000
# A longer "answer" is a runaway extraction, scored wrong without parsing it.
MAX_ANSWER_CHARS = 4_000
# Boxes further apart than this (or with more than connectors between them) are separate answers.
_MAX_BOX_GAP = 80
_MAX_BOXES = 64  # only the last this many boxes are looked at
# An unanchored math span longer than this is a derivation, not a final answer (MATH's longest gold
# answer has 81 characters; a 3x3 matrix about 60).
_MAX_SPAN_ANSWER = 150

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_FINAL_RE = re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*", re.I)
_THE_ANSWER_RE = re.compile(r"(?:the\s+answer\s+is|\banswer\s*:)\s*:?\s*", re.I)
_HASH_RE = re.compile(r"####[ \t]*([^\n]+)")
# What may stand between two boxes (or two math spans) of one answer: commas, "and"/"or", spacing
# commands, \text{...} (" and ", " for part (a) and "), math delimiters, line breaks, and a
# variable label (``x = \boxed{1}, y = \boxed{2}``).
_CONNECTOR_RE = re.compile(
    r"\\text\s*\{[^{}\n]{0,40}\}|\\(?:quad|qquad|[,;:! ]|\\)|\\[()\[\]]|\$|&|[\s,;.]|\band\b|\bor\b"
    r"|(?<![\w\\])[A-Za-z](?:_\{?\w{1,3}\}?)?\s*=", re.I)  # a label "y_2 =" before the next box
_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)  # an escape (\{ \} \\) or a brace
# The delimiters of LaTeX math spans, plus newlines (which end an inline span) and an escaped \$.
_SPAN_TOKEN_RE = re.compile(r"\\\$|\$\$|\$|\\\(|\\\)|\\\[|\\\]|\n")
_SPAN_CLOSE = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
_INLINE = {"$", "\\("}
# A prose word: two or more letters not preceded by a backslash (a LaTeX command) or a letter.
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
# \text{...}-like arguments and environment names (\begin{pmatrix}, \begin{array}{cc}) are not prose
_TEXT_ARG_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{[^{}]*\}"
                          r"|\\(?:begin|end)\s*\{\w+\*?\}(?:\{[^{}]*\})?")
# Words that are not prose inside an answer: connectors, function names without a backslash, units.
_ANSWER_WORDS = frozenset(
    "and or sin cos tan cot sec csc log ln exp sqrt pi inf oo cm mm km kg mg ml cc ft in "
    "deg degree degrees percent pct".split())
# A number standing alone in prose (flexible mode): not glued to a letter, a backslash, a brace,
# ^ or _ (so never cut out of a word like AZYUK2A or out of LaTeX like \frac{1+\sqrt{5}}{2}).
_PROSE_NUMBER_RE = re.compile(
    r"(?<![\w\\{}^_.,/])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w{}^_]|[.,/]\d)")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|;\s")
_IS_RE = re.compile(r"\b(?:is|are|equals|be)\b\s*:?", re.I)
_TRAILING_WORDS_RE = re.compile(r"^(.*?[\d}\])|])\s+[A-Za-z][A-Za-z ]*$", re.S)


def resolve_mode(mode: str | None = "strict", fallback_last_number: bool | None = None, *, owner: str = "math") -> str:
    """The extraction mode from ``mode`` and the deprecated ``fallback_last_number`` alias."""
    if fallback_last_number is not None:
        warnings.warn(f"{owner}: fallback_last_number= is deprecated; use mode='flexible' (True) or "
                      "mode='strict' (False)", DeprecationWarning, stacklevel=3)
        alias = "flexible" if fallback_last_number else "strict"
        if mode not in (None, "strict", alias):
            raise ValueError(f"{owner}: mode={mode!r} contradicts fallback_last_number={fallback_last_number!r} "
                             f"(which means mode={alias!r}); pass only mode=")
        return alias
    if mode is None:
        return "strict"
    if mode not in MODES:
        raise ValueError(f"{owner}: mode={mode!r} is not one of {MODES}; use 'strict' (explicit answers only, "
                         "for training rewards) or 'flexible' (also the last number of the prose)")
    return mode


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


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of the last ``_MAX_BOXES`` usable boxes, in text order.

    A box that is unbalanced or empty is skipped. Linear time: braces are matched in one pass, so a
    completion of 100,000 unclosed boxes costs no more than reading it.
    """
    hits = list(_BOX_RE.finditer(text))[-_MAX_BOXES:]
    if not hits:
        return []
    pairs = _matching_braces(text, hits[0].end())
    out = []
    for m in hits:
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            close = pairs.get(i)
            if close is not None and text[i + 1:close].strip():
                out.append((m.start(), close + 1, text[i + 1:close].strip()))
        elif i > m.end():  # "\boxed 5": up to the next $ or whitespace
            tail = re.match(r"[^\s$]+", text[i:i + 1000])
            if tail:
                out.append((m.start(), i + tail.end(), tail.group(0)))
    # a box inside another box's content is part of that box
    return [b for b in out if not any(o[0] < b[0] and b[1] <= o[1] for o in out)]


def _is_connector(gap: str) -> bool:
    return len(gap) <= _MAX_BOX_GAP and not _CONNECTOR_RE.sub("", gap).strip()


def _last_group(items: list[tuple[int, int, str]], text: str) -> tuple[int, str] | None:
    """``(start, joined contents)`` of the last run of items separated only by connectors."""
    if not items:
        return None
    group = [items[-1]]
    for prev in reversed(items[-_MAX_BOXES:-1]):  # at most _MAX_BOXES items form one answer
        if not _is_connector(text[prev[1]:group[-1][0]]):
            break
        group.append(prev)
    group.reverse()
    contents = list(dict.fromkeys(c for _, _, c in group))  # "\boxed{5} \boxed{5}" is 5
    return group[0][0], ", ".join(contents)


def extract_boxed(text: str) -> str | None:
    """Content of the last group of ``\\boxed{...}``/``\\fbox{...}`` (balanced braces) or ``\\boxed X``:
    one box, or several boxes separated only by connectors, joined with ``, ``."""
    group = _last_group(_boxes(text), text)
    return group[1] if group else None


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of the LaTeX math spans of ``text``, in one linear pass. An inline
    span (``$``, ``\\(``) that meets a newline before it closes is not a span."""
    return _scan_math(text)[0]


def _scan_math(text: str) -> tuple[list[tuple[int, int, str]], int | None]:
    """The math spans of ``text`` and, when the text stops inside an unclosed span (cut off
    mid-formula: ``... so $x = 12 +``), where that span opens (else None)."""
    spans, opener, open_at, start = [], None, 0, 0
    for m in _SPAN_TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok == "\\$":
            continue
        if opener is None:
            if tok in _SPAN_CLOSE:
                opener, open_at = tok, m.end()
                start = m.start()
            continue
        if tok == _SPAN_CLOSE[opener]:
            content = text[open_at:m.start()].strip()
            if content:
                spans.append((start, m.end(), content))
            opener = None
        elif tok == "\n" and opener in _INLINE:
            opener = None
        elif tok in ("$", "$$") and opener in ("\\(", "\\["):
            continue
    return spans, (start if opener is not None and text[open_at:].strip() else None)


def _prose_words(s: str) -> list[str]:
    """Words of ``s`` that are prose: not LaTeX commands, not inside ``\\text{}``, not connectors,
    function names or units."""
    return [w for w in _WORD_RE.findall(_TEXT_ARG_RE.sub(" ", s)) if w.lower() not in _ANSWER_WORDS]


def _last_math_span(text: str) -> tuple[int, str] | None:
    """The last math span group that is mathematics, not prose wrapped in dollars
    (``$5 per hour and works 3 hours so $`` is not an answer). A chain ``x = 2 + 3 = 5`` states its
    last value: it is read as ``x = 5``. None when the text stops inside an unclosed span."""
    spans, cut_at = _scan_math(text)
    if cut_at is not None:  # the completion stops mid-formula: it never stated a final answer
        return None
    spans = [(a, b, _chain_result(c)) for a, b, c in spans if len(_prose_words(c)) < 2]
    group = _last_group(spans, text)
    if group and len(group[1]) > _MAX_SPAN_ANSWER:  # a derivation, not a stated answer
        return None
    return group


_LABEL_RE = re.compile(r"[A-Za-z](?:_\{?\w{1,3}\}?)?")
_NOT_A_CHAIN_RE = re.compile(r"[,;<>]|\\(?:le|ge|leq|geq|neq|ne|lt|gt|approx|in)\b")


def _chain_result(span: str) -> str:
    """``a = b = c`` -> ``c`` (``x = b = c`` -> ``x = c``): the last of a chain of equalities at the
    top level (outside braces and brackets; ``\\le``, ``<=``, ``!=`` are not equalities)."""
    if span.count("=") < 2 or _NOT_A_CHAIN_RE.search(span):
        return span
    depth, cuts = 0, []
    for i, c in enumerate(span):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "=" and depth == 0 and (i == 0 or span[i - 1] not in "<>!\\:"):
            cuts.append(i)
    if len(cuts) < 2:
        return span
    first, last = span[:cuts[0]].strip(), span[cuts[-1] + 1:].strip()
    if not last:
        return span
    return f"{first} = {last}" if _LABEL_RE.fullmatch(first) else last


def _answer_tags_from_last(text: str, limit: int = 16):
    """``(position, content)`` of ``<answer>...</answer>`` pairs, last first (rfind: linear time)."""
    lower = text.lower()
    end = len(lower)
    for _ in range(limit):
        close = lower.rfind("</answer>", 0, end)
        if close < 0:
            return
        open_ = lower.rfind("<answer>", 0, close)
        if open_ < 0:
            return
        yield open_, text[open_ + len("<answer>"):close]
        end = open_


_WRAPPER_CHARS = " \t\r\n$\"'\u201c\u201d"
_WRAPPER_RE = re.compile(r"^(?:\*\*|\\\")|(?:\*\*|\\\")$")


def _strip_wrappers(s: str) -> str:
    """Peel markdown bold, a full stop, quotes and ``$`` in any order (a bounded number of rounds,
    each stripping whole runs: a run of 20,000 ``$`` lines costs one pass, not 20,000)."""
    for _ in range(8):
        previous = s
        s = _WRAPPER_RE.sub("", s.strip()).strip(_WRAPPER_CHARS).rstrip(".")
        if s == previous:
            break
    return s.strip(_WRAPPER_CHARS)


def _sentence_answer(s: str) -> str | None:
    """The answer stated at the start of ``s`` (the text after an anchor phrase or inside tags):
    a box; a math span that opens it; else the sentence, cut at its end, after its last "is"."""
    s = s.strip()
    boxed = extract_boxed(s)
    if boxed:
        return boxed
    spans = _math_spans(s)
    if spans and not _strip_wrappers(s[:spans[0][0]]):  # it opens with math: that span (group)
        group = _last_group([sp for sp in spans if sp[0] < 400], s) if len(spans) > 1 else None
        first = _last_group(spans[:1], s)
        if group and group[0] == spans[0][0]:
            return group[1]
        return first[1]
    line = s.split("\n", 1)[0]
    # cut the sentence at its end, looking only at the prose between math spans
    cut, pos = len(line), 0
    for a, b, _ in [sp for sp in spans if sp[1] <= len(line)] + [(len(line), len(line), "")]:
        m = _SENTENCE_END_RE.search(line, pos, a)
        if m:
            cut = m.start()
            break
        pos = b
    sentence = line[:cut]
    inner = [sp for sp in spans if sp[1] <= cut]
    prose = sentence
    for a, b, _ in reversed(inner):
        prose = prose[:a] + " " * (b - a) + prose[b:]
    verbs = list(_IS_RE.finditer(prose))
    if verbs and _prose_words(prose[:verbs[-1].start()]):  # "The largest $n$ is 34" -> 34
        sentence = sentence[verbs[-1].end():]
    ans = _strip_wrappers(sentence.strip())
    if _prose_words(ans) and not inner:  # "Final Answer: Jane started Sphere 3 hours ago" -> 3,
        nums = _PROSE_NUMBER_RE.findall(ans)  # but only when the sentence states one number
        return nums[0] if len(nums) == 1 else ans
    m = _TRAILING_WORDS_RE.match(ans)
    if m:  # "42 apples" -> 42
        ans = m.group(1).strip()
    return ans or None


def _bare_answer(text: str) -> str | None:
    """The whole text when it is nothing but an answer: one short line with no prose."""
    s = _strip_wrappers(text.strip())
    if not s or "\n" in s or len(s) > 500 or _prose_words(s):
        return None
    return s


def _prose_number(text: str) -> str | None:
    """The last number standing alone in the prose of ``text`` (outside math spans, including an
    unclosed one at the end)."""
    spans, cut_at = _scan_math(text)
    masked = text if cut_at is None else text[:cut_at]
    for a, b, _ in reversed(spans):
        masked = masked[:a] + " " * (b - a) + masked[b:]
    nums = _PROSE_NUMBER_RE.findall(masked)
    return nums[-1] if nums else None


def extract_answer(text, *, mode: str = "strict", fallback_last_number: bool | None = None) -> str | None:
    """The final answer in ``text`` (a completion), by the tiers in the module docstring.

    ``mode="strict"``: explicit answers only (tiers 1-4). ``mode="flexible"``: then the last number
    standing alone in the prose. ``fallback_last_number`` is a deprecated alias (True -> flexible).
    """
    return extract_with_tier(text, mode=resolve_mode(mode, fallback_last_number))[1]


def extract_with_tier(text, *, mode: str = "strict") -> tuple[int | None, str | None]:
    """``(tier, answer)``: the answer of ``extract_answer`` and the tier (1-4; 5 = a prose number,
    flexible only) it came from; ``(None, None)`` when there is none."""
    mode = resolve_mode(mode)
    if not isinstance(text, str) or not text:
        return None, None
    if "\x00" in text:
        text = text.replace("\x00", "")
    tail = text[-_TAIL_CHARS:]
    # tier 1: boxes, answer tags, "final answer": the last one stated wins
    found: list[tuple[int, str]] = []
    group = _last_group(_boxes(tail), tail)
    if group:
        found.append(group)
    for pos, content in _answer_tags_from_last(tail):
        ans = _sentence_answer(content)
        if ans:
            found.append((pos, ans))
            break
    for m in reversed(list(_FINAL_RE.finditer(tail))[-16:]):
        ans = _sentence_answer(tail[m.end():])
        if ans:
            found.append((m.start(), ans))
            break
    if found:  # an answer in words ("the final answer is positive, because ...") ranks below math
        return 1, max(found, key=lambda f: (not _prose_words(f[1]), f[0]))[1]
    for m in reversed(list(_THE_ANSWER_RE.finditer(tail))[-16:]):  # tier 2: "the answer is", ####
        ans = _sentence_answer(tail[m.end():])
        if ans:
            found.append((m.start(), ans))
            break
    hashes = list(_HASH_RE.finditer(tail))
    if hashes:
        ans = _strip_wrappers(hashes[-1].group(1))
        if ans:
            found.append((hashes[-1].start(), ans))
    if found:
        return 2, max(found, key=lambda f: (not _prose_words(f[1]), f[0]))[1]
    span = _last_math_span(tail)
    if span:
        return 3, span[1]
    bare = _bare_answer(tail)
    if bare:
        return 4, bare
    if mode == "flexible":
        number = _prose_number(tail)
        if number:
            return 5, number
    return None, None


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
    decimals or simple fractions (``\\frac{a}{b}``, ``a/b``) are compared exactly (``50`` != ``5``,
    ``72.0`` = ``72``, ``\\frac{6}{8}`` = ``0.75``); a prediction longer than ``MAX_ANSWER_CHARS``
    is wrong."""
    if len(pred) > MAX_ANSWER_CHARS:
        return False  # not an answer: a runaway extraction (a 20,000-digit "number", a pasted log)
    g, p = _norm(gold), _norm(pred)
    if g and g == p:
        return True
    if max(len(g), len(p)) <= 4000:
        a, b = _simple_rational(g), _simple_rational(p)
        if a is not None and b is not None:
            return a == b
    return None


_SIMPLE_FRACTION_RE = re.compile(r"(-?)(?:\\frac\{(-?\d+)\}\{(\d+)\}|(\d+)/(\d+))")


def _simple_rational(s: str) -> Fraction | None:
    """The exact value of a plain decimal (``-3.5``), ``\\frac{a}{b}`` or ``a/b`` (normalised), or None."""
    if _PLAIN_NUMBER_RE.fullmatch(s):
        return Fraction(s)
    m = _SIMPLE_FRACTION_RE.fullmatch(s)
    if not m:
        return None
    num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
    if int(den) == 0:
        return None
    value = Fraction(int(num), int(den))
    return -value if m.group(1) else value


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


_GOLD_MARKERS = ("\\boxed", "\\fbox", "####", "<answer>", "$", "\\(", "\\[")


def gold_answer_of(gold) -> str | None:
    """The answer in a gold: the gold itself when it is a bare answer (``\\frac{1}{2}``,
    ``\\text{Evelyn}``), else what strict extraction reads from it (a full solution with a
    ``\\boxed{}`` or a ``####`` line, an answer in ``$...$``); the whole gold when that finds nothing."""
    if gold is None:
        return None
    if not isinstance(gold, str):
        gold = str(gold)
    gold = _strip_nul(gold).strip()
    if any(marker in gold for marker in _GOLD_MARKERS):
        gold = extract_answer(gold, mode="strict") or gold
    return gold or None


@register_verifier("math")
class MathVerifier(Verifier):
    """TRL reward function: 1.0 when the completion's final answer equals the gold, else 0.0.

    Options: ``gold_column`` (default ``"answer"``), ``timeout_s`` per item (default 1.0),
    ``mode`` (``"strict"``, the default: only an explicit final answer counts; ``"flexible"``: also
    the last number standing alone in the prose, see ``extract_answer``), ``warm_start`` (default
    True: start the worker pool in the background on construction), ``gold_timeout_s`` (default
    ``max(timeout_s, 5.0)``: a gold is trusted data, parsed once per group, and a cold parser can
    need ~1 s), ``name``. ``fallback_last_number`` is a deprecated alias of ``mode``
    (True -> ``"flexible"``, False -> ``"strict"``).

    The gold may be a bare answer (``\\frac{1}{2}``) or a full solution: when it contains a
    ``\\boxed{}``, a ``####`` line or a math span, the answer is extracted from it first.

    Scores: None when the gold is missing or unparsable (TRL skips it). A completion without an
    extractable answer, or whose check timed out, scores 0.0. Everything is counted in ``stats``:
    ``correct``, ``incorrect``, ``no_answer``, ``timeouts``, ``crashes``, ``gold_missing``,
    ``gold_unparsable``, ``gold_timeouts`` (plus the base counters).
    """

    def __init__(self, *, gold_column: str = "answer", timeout_s: float = 1.0, mode: str = "strict",
                 fallback_last_number: bool | None = None, warm_start: bool = True,
                 gold_timeout_s: float | None = None, name: str | None = None):
        super().__init__(name=name)
        self.mode = resolve_mode(mode, fallback_last_number, owner="get_verifier('math')")
        if not timeout_s > 0:
            raise ValueError(f"get_verifier('math'): timeout_s={timeout_s!r} must be > 0 seconds per item (e.g. 1.0)")
        self.gold_column = gold_column
        self.timeout_s = float(timeout_s)
        self.gold_timeout_s = gold_timeout_s
        if warm_start:  # start the worker pool (a few seconds) while the trainer generates
            threading.Thread(target=_warm_pool, name="math-verifier-warm-start", daemon=True).start()

    @property
    def fallback_last_number(self) -> bool:
        """Deprecated view of ``mode``: True when ``mode == "flexible"``."""
        return self.mode == "flexible"

    def gold_answer(self, gold) -> str | None:
        return gold_answer_of(gold)

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
            pred = extract_answer(completions[i], mode=self.mode)
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
