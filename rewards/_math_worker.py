"""Math equivalence worker: runs math-verify + sympy in a separate, killable process.

This file is deliberately self-contained (it imports only the standard library, sympy and
math-verify, never ``trl_grpo_plus``, ``trl`` or ``torch``) because it is started as a *script*::

    python -c <boot code> _math_worker.py <control-fd> <worker memory limit, MB>   (see _math_pool)

That process is a **zygote**: it imports sympy/math-verify once (about a second), then forks one
worker per request it gets on its control socket. A fork of a warm, single-threaded zygote takes a
few milliseconds, so replacing a worker that was killed for a timeout costs almost nothing, and no
worker ever descends from the (possibly multi-threaded, torch-importing) trainer process.

Protocol (pickled tuples over ``multiprocessing.connection.Connection`` framing on a socket):

* zygote control socket: the parent sends one byte plus one socket fd (``SCM_RIGHTS``); the zygote
  forks a worker serving that socket and answers with the worker's pid (8 bytes, big-endian).
* worker socket: the parent sends ``("group", gold, preds, timeout_s, soft, gold_timeout_s)``; it answers
  ``("gold", ok, parsed_now)`` once the gold is parsed (``ok`` False: unparsable, "timeout";
  ``parsed_now`` False when it came from the worker's cache) and then, when ``ok``,
  ``("item", i, verdict)`` for each prediction, with ``verdict`` one of True / False / "timeout".

Timeouts: the worker arms a soft ``ITIMER_REAL`` per item (legal here: the worker's main thread),
which interrupts pure-Python sympy work and costs no restart. Work stuck in C (a huge integer power)
ignores signals; the parent then kills the worker by pid at its own hard deadline and forks another.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections import OrderedDict

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from sympy import Basic, Expr, Float, MatrixBase, Mul, Pow, Rational, Symbol, UnevaluatedExpr

_GOLD_CACHE_SIZE = 512
# Parsed predictions, by answer string: the same short answers ("2", "\\frac{1}{2}") recur across
# problems and training steps. sympy objects are immutable, so sharing them is safe.
_PRED_CACHE_SIZE = 4096
_PRED_CACHE: OrderedDict = OrderedDict()


class SoftTimeout(BaseException):
    """Raised by the interval timer inside a worker. A BaseException so that math-verify's and
    sympy's ``except Exception`` blocks do not swallow it."""


# ----------------------------------------------------------------------------------------- parsing
_MC_RE = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?$")
_TEXT_WRAP_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{(.*)\}$", re.S)


def multiple_choice_letter(answer: str) -> str | None:
    """``"C"``, ``"(C)"``, ``"\\text{(C)}"``, ``"\\textbf{C}"`` -> ``"C"``; anything else -> None."""
    s = answer.strip().strip("$").strip()
    for _ in range(3):
        m = _TEXT_WRAP_RE.match(s)
        if not m:
            break
        s = m.group(1).strip()
    m = _MC_RE.match(s)
    return m.group(1).upper() if m else None


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # The answer string is wrapped in \boxed{} so that math-verify's boxed extractor takes it whole
    # (with its LaTeX normalisation: units, \text{}, \left/\right, \dfrac, ...). No unanchored
    # targets: when the whole answer does not parse, math-verify must not pick a number out of it
    # (``F_{n + 1} = F_{n + 2} - F_n, ...`` would otherwise be read as 2).
    return [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False)]


_CONFIGS = None


_REPEATING_RE = re.compile(r"(-?)(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
_TRAILING_BACKSLASH_RE = re.compile(r"(?:\\\s*)+$")
_MATH_DELIMITED_RE = re.compile(r"\$\$([^$]+)\$\$|\$([^$]+)\$|\\\((.+)\\\)|\\\[(.+)\\\]", re.S)
_BARE_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_PERCENT_WORD_RE = re.compile(r"(\d)\s*(?:percent|pct)\b\.?$")
_SPACED_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")


def _repeating_decimal(m: re.Match) -> str:
    """``0.1\\overline{6}`` -> ``\\frac{1}{6}``: a repeating decimal is an exact rational."""
    sign, whole, fixed, period = m.groups()
    den = 10 ** len(fixed) * (10 ** len(period) - 1)
    num = int(whole or 0) * den + int(fixed + period) - int(fixed or 0)
    return f"{sign}\\frac{{{num}}}{{{den}}}"


def normalize_answer(answer: str) -> str:
    """What math-verify's normalisation lacks, on an answer string: a trailing backslash (``185\\``)
    and outer math delimiters are dropped, ``28 percent`` is ``28\\%``, a repeating decimal
    (``0.\\overline{3}``) becomes its exact fraction, and a number with spaced thousands (``1 000``)
    loses the spaces (math-verify reads it as the product 1*000)."""
    s = answer.strip()
    s = _TRAILING_BACKSLASH_RE.sub("", s)
    m = _MATH_DELIMITED_RE.fullmatch(s)
    if m:  # "$\\frac12$", "\\(x\\)": the answer inside its math delimiters
        s = next(g for g in m.groups() if g is not None).strip()
    s = _BARE_DOLLAR_RE.sub("", s)  # "12 $ and $13": delimiters inside an answer (\\$ is money)
    s = _PERCENT_WORD_RE.sub(r"\1\\%", s)
    if "overline" in s:
        s = _REPEATING_RE.sub(_repeating_decimal, s)
    if _SPACED_THOUSANDS_RE.fullmatch(s):
        s = s.replace(" ", "")
    return s


def parse_answer(answer: str):
    """math-verify parse of an already-extracted answer string; [] when nothing parses."""
    global _CONFIGS
    from math_verify import parse

    if _CONFIGS is None:
        _CONFIGS = _configs()
    answer = normalize_answer(answer)
    parsed = parse("\\boxed{" + answer + "}", extraction_config=_CONFIGS, parsing_timeout=None)
    return [_imaginary_unit(_exact_floats(p)) for p in parsed]


def _imaginary_unit(expr):
    """In Euler's form ``e^{i\\theta}`` the symbol ``i`` is the imaginary unit (math-verify keeps it
    a plain symbol, so ``e^{i\\pi}`` != -1): substitute ``I`` when ``i`` appears in an exponent of e."""
    try:
        if isinstance(expr, Basic) and not isinstance(expr, MatrixBase):
            i_symbols = [x for x in expr.free_symbols if str(x) == "i"]
            if i_symbols and any(i_symbols[0] in e.exp.free_symbols for e in expr.atoms(sympy.exp)):
                return expr.xreplace({i_symbols[0]: sympy.I})
    except Exception:
        pass
    return expr


def _exact_floats(expr):
    """Replace every sympy Float by the exact Rational of its decimal digits (1.41 -> 141/100).

    math-verify compares a float to anything after rounding both to 6 decimals, so 3.14159265
    passes for pi. With exact rationals a decimal counts only when it *is* the value: 0.25 = 1/4,
    72.0 = 72, but 3.14159265 != pi, 1.41 != sqrt(2) and 0.333333 != 1/3.
    """
    try:
        if isinstance(expr, MatrixBase):
            return expr.applyfunc(_exact_floats)
        if isinstance(expr, Basic):
            floats = expr.atoms(Float)
            if floats:
                return expr.xreplace({f: Rational(str(f)) for f in floats if f.is_finite})
    except Exception:
        pass
    return expr


def equivalent(gold_parsed, pred_answer: str, gold_letter: str | None) -> bool:
    """Is ``pred_answer`` (a string) equivalent to the parsed gold?"""
    if gold_letter is not None:  # multiple choice: compare letters, never values
        return multiple_choice_letter(pred_answer) == gold_letter

    pred = _PRED_CACHE.get(pred_answer)
    if pred is None:
        pred = parse_answer(pred_answer)
        _PRED_CACHE[pred_answer] = pred
        if len(_PRED_CACHE) > _PRED_CACHE_SIZE:
            _PRED_CACHE.popitem(last=False)
    else:
        _PRED_CACHE.move_to_end(pred_answer)
    if not pred:
        return False
    if _numbers_differ(gold_parsed, pred):
        return False
    # allow_set_relation_comp: a gold ``x \\in [-2, 7]`` equals ``-2 \\le x \\le 7`` (math-verify
    # already accepts that pair the other way round)
    return bool(verify(gold_parsed, pred, timeout_seconds=None, allow_set_relation_comp=True))


# Irrational-ish sample points for the numeric screen: no zeros, integers or simple fractions.
_SAMPLE_POINTS = ((0.6180339887498949, 1.3247179572447460, 2.2360679774997897),
                  (1.4142135623730951, -0.7548776662466927, 0.5772156649015329))


def _numbers_differ(gold: list, pred: list) -> bool:
    """True when gold and pred provably differ as expressions: their difference, evaluated at 30
    digits at two sample points of their free symbols (none for plain numbers), is clearly nonzero
    at both. Identical expressions evaluate equal everywhere, so this never rejects an identity;
    it skips math-verify's ``simplify``, its slowest path, on clearly wrong answers.

    Any doubt -> False (let ``verify`` decide): relations, sets, matrices, percent, text-like
    symbol products (``\\text{Evelyn}`` vs ``Evelyn``), undefined functions, equal strings,
    non-finite values. Against a gold that is a plain number, a prediction ``x = value`` is its
    value (as in ``verify``), and symbols in the prediction need no guard: no product of symbols
    equals a number at two irrational sample points.
    """
    g_exprs = [g for g in gold if not isinstance(g, str)]
    numeric_gold = bool(g_exprs) and all(isinstance(g, Expr) and not g.free_symbols and not g.has(UnevaluatedExpr)
                                         for g in g_exprs)
    p_exprs = [p.rhs if numeric_gold and isinstance(p, sympy.Eq) and isinstance(p.lhs, Symbol) else p
               for p in pred if not isinstance(p, str)]
    g_strs = {g.strip() for g in gold if isinstance(g, str)}
    if not g_exprs or not p_exprs or any(p.strip() in g_strs for p in pred if isinstance(p, str)):
        return False

    if all(isinstance(e, sympy.Equality) for e in g_exprs + p_exprs):
        return _equations_differ(g_exprs, p_exprs)

    def text_like(e) -> bool:
        factors = Mul.make_args(e)
        return all(isinstance(f, Symbol) or (isinstance(f, Pow) and isinstance(f.base, Symbol)) for f in factors)

    try:
        for e in g_exprs + p_exprs:
            if not isinstance(e, Expr) or e.has(UnevaluatedExpr):
                return False
            if not numeric_gold and e.free_symbols and (text_like(e) or any(len(str(x)) > 1 for x in e.free_symbols)):
                return False
        for g in g_exprs:
            for p in p_exprs:
                diff_expr = g - p
                symbols = sorted(diff_expr.free_symbols, key=str)
                points = _SAMPLE_POINTS if symbols else _SAMPLE_POINTS[:1]
                if len(symbols) > len(points[0]):
                    return False
                for point in points:
                    subs = {x: Float(v, 30) for x, v in zip(symbols, point)}
                    diff = diff_expr.evalf(30, subs=subs) if subs else diff_expr.evalf(30)
                    scale = g.evalf(30, subs=subs) if subs else g.evalf(30)
                    if not (diff.is_number and scale.is_number and diff.is_finite and scale.is_finite):
                        return False
                    if not abs(diff) > max(abs(scale), 1) * 1e-20:
                        return False
    except Exception:
        return False
    return True


def _equations_differ(gold: list, pred: list) -> bool:
    """True when every gold equation and every predicted one are provably not the same equation.
    Only for *linear* equations in the same 1-3 symbols: ``verify`` compares the solution sets, and
    two linear equations have the same solutions exactly when their ``lhs - rhs`` are proportional
    (``-34x - 45y = ...`` is ``34x + 45y = ...``), which two different ratios at two sample points
    rule out. (A nonlinear pair can share its solutions without being proportional: ``\\sqrt{x} = 2``
    and ``x = 4``.) Any doubt -> False."""
    try:
        for g in gold:
            for p in pred:
                dg, dp = g.lhs - g.rhs, p.lhs - p.rhs
                symbols = sorted(dg.free_symbols, key=str)
                if not symbols or dp.free_symbols != set(symbols) or len(symbols) > len(_SAMPLE_POINTS[0]):
                    return False
                if max(sympy.Poly(dg, *symbols).total_degree(), sympy.Poly(dp, *symbols).total_degree()) > 1:
                    return False
                ratios = []
                for point in _SAMPLE_POINTS:
                    subs = {x: Float(v, 30) for x, v in zip(symbols, point)}
                    r = (dp / dg).evalf(30, subs=subs)
                    if not (r.is_number and r.is_finite):
                        return False
                    ratios.append(r)
                if not abs(ratios[0] - ratios[1]) > max(abs(ratios[0]), abs(ratios[1]), 1) * 1e-20:
                    return False
    except Exception:
        return False
    return True


# One of each common answer shape (MATH/GSM8K style), parsed by the zygote before it forks.
_WARM_ANSWERS = (
    "42", "-3.5", "\\frac{1}{2}", "\\dfrac{3\\sqrt{3}}{4}", "2\\sqrt{5}", "\\sqrt[3]{2}", "3\\pi",
    "\\frac{\\pi}{6}", "x^2+2x+1", "(x-1)(x+2)", "y = 2x - 3", "x=5", "(1,2)", "[1,2)", "(-\\infty, 3]",
    "(-\\infty,-2)\\cup(3,\\infty)", "\\{1,2,3\\}", "1, 2, 3", "(3, \\frac{\\pi}{2})",
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
    "30^\\circ", "50\\%", "10\\text{ cm}", "\\$18.90", "\\text{(C)}", "\\text{Evelyn}", "2+3i",
    "\\log_2 5", "\\sin x", "\\tan 20^\\circ", "a_n = 2^n", "1{,}000", "\\infty", "e^{2}",
    # shapes of the intermediate expressions a completion without a box ends on (strict mode reads its
    # last math span): products, logs, absolute values, subscripts, functions, relations, chains
    "\\log_2{3} \\cdot \\log_3{4}", "|a| + |b| + |c|", "|a_{n-1}|", "f(g(x)) = f(-x)", "p(3) = A(-1+\\sqrt{11})",
    "\\sin 20^\\circ - \\sin 40^\\circ = 2 \\cos 30^\\circ \\sin 10^\\circ", "(a,b,c) = (j + k - 1, i + k - 1)",
    "\\left( \\frac{1}{5} \\right)^4 \\cdot 10", "x \\in [-2,7]", "\\{1\\pm\\sqrt{5},-2\\}", "5x - 7y + 11z + 4 = 0",
    "\\binom{8}{3} = 56", "5! = 120", "\\sum_{k=1}^{n} k^2", "\\lfloor x \\rfloor + \\lceil y \\rceil", "x \\le 3",
    "a \\geq b > 0", "x \\neq 2", "2^{10} \\equiv 1 \\pmod{11}", "\\overline{AB} = 6", "\\angle ABC = 90^\\circ",
    "AB^2 + BC^2 = AC^2", "\\frac{a+b}{2} \\ge \\sqrt{ab}", "10^{-3}", "\\ln x + e^{x}", "x = \\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}",
    "3 \\times 4 = 12", "12 \\div 4", "\\dfrac{7}{2} \\approx 3.5", "\\cos^2 \\theta + \\sin^2 \\theta = 1",
    "\\mathbb{R}", "\\emptyset", "(2, 3) \\cap [1, 4]", "2 \\cdot 3 + 4 \\cdot 5 = 26", "\\sqrt{x^2 + y^2}",
    "\\tan^{-1}(1)", "\\arcsin \\frac{1}{2}", "0.\\overline{3}", "f^{-1}(x)", "x_1 + x_2 = -\\frac{b}{a}", "n(n+1)/2",
)


def _speed_up_latex2sympy() -> None:
    """Two speed-ups of latex2sympy's parser that leave its results unchanged (checked on the MATH
    golds and Math-Verify's tables); skipped if its internals differ from the tested version.

    * Two-stage ANTLR parsing: try the fast SLL prediction mode first, and only on an error parse
      again in full LL mode (the standard ANTLR recipe). Full-LL prediction is what makes a novel
      expression slow to parse; SLL gives the same tree whenever it succeeds on this grammar.
    * ``parse_number`` of a digit string builds ``sympy.Integer`` directly instead of going through
      ``sympy.Number(str)``, which runs sympy's whole expression parser for every number token.
    """
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended import latex2sympy2 as l2s

        cls = l2s._Latex2Sympy
        create_parser, parse, parse_number = cls.create_parser, cls.parse, cls.parse_number
    except (ImportError, AttributeError):
        return

    def sll_create_parser(self, latex_str):
        parser = create_parser(self, latex_str)
        if getattr(self, "_sll_stage", False):
            parser._interp.predictionMode = PredictionMode.SLL
        return parser

    def two_stage_parse(self, latex_str):
        self._sll_stage = True
        try:
            return parse(self, latex_str)
        except Exception:
            pass  # an SLL error (or a real one): the full LL parse decides
        finally:
            self._sll_stage = False
        return parse(self, latex_str)

    def fast_parse_number(self, text):
        digits = text.replace(",", "")
        if digits.isdigit() and len(digits) <= 1000:
            return sympy.Integer(int(digits))
        return parse_number(self, text)

    cls.create_parser, cls.parse, cls.parse_number = sll_create_parser, two_stage_parse, fast_parse_number


# ------------------------------------------------------------------------------------------ worker
def _on_alarm(signum, frame):
    raise SoftTimeout()


def _timed(fn, timeout_s, *args):
    if timeout_s is None:  # no soft timer: only the parent's hard kill bounds this call
        return fn(*args)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.01))
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _silence_math_verify():
    import logging

    import math_verify.grader
    import math_verify.parser

    # We disable math-verify's own signal timeouts (parsing_timeout=None); it warns once about that.
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)


def _gold_entry(cache: OrderedDict, gold: str, timeout_s: float):
    """``(parsed gold, multiple-choice letter, parsed just now?)``, from the cache when possible."""
    entry = cache.get(gold)
    if entry is not None:
        cache.move_to_end(gold)
        return entry + (False,)
    letter = multiple_choice_letter(gold)
    parsed = None if letter else _timed(parse_answer, timeout_s, gold)
    entry = (parsed, letter)
    cache[gold] = entry
    if len(cache) > _GOLD_CACHE_SIZE:
        cache.popitem(last=False)
    return entry + (True,)


def serve(conn) -> None:
    """Worker loop: answer ``("group", gold, preds, timeout_s, soft, gold_timeout_s)`` requests until EOF.
    ``soft`` False: no in-worker timer (the parent's kill is then the only limit; used by tests)."""
    signal.signal(signal.SIGALRM, _on_alarm)
    cache: OrderedDict = OrderedDict()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        _, gold, preds, timeout_s, soft, gold_timeout_s = msg
        if not soft:
            timeout_s = gold_timeout_s = None
        fresh = True
        try:
            parsed, letter, fresh = _gold_entry(cache, gold, gold_timeout_s)
            ok = letter is not None or bool(parsed)
        except SoftTimeout:
            ok = "timeout"
        except BaseException:  # a parser crash: the gold is unusable
            ok = False
        conn.send(("gold", ok, fresh))
        if ok is not True:
            continue
        for i, pred in enumerate(preds):
            try:
                verdict = bool(_timed(equivalent, timeout_s, parsed, pred, letter))
            except SoftTimeout:
                verdict = "timeout"
            except BaseException:
                verdict = False
            conn.send(("item", i, verdict))


def zygote(ctl_fd: int, memory_mb: int = 0) -> None:
    """Import the heavy modules once, then fork a worker per request on the control socket."""
    from multiprocessing.connection import Connection

    _silence_math_verify()
    _speed_up_latex2sympy()
    # Warm the parser before forking: ANTLR builds its prediction DFA lazily, per input shape, and
    # every forked worker inherits what the zygote built instead of rebuilding it.
    for answer in _WARM_ANSWERS:
        try:
            parse_answer(answer)
        except Exception:
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our workers
    ctl = socket.socket(fileno=ctl_fd)
    ctl.sendall(b"R")  # ready
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(ctl, 1, 1)
        except OSError:
            return
        if not data:
            return  # parent gone
        pid = os.fork()
        if pid == 0:
            ctl.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if memory_mb > 0:  # a runaway item gets MemoryError (scored False), not the OOM killer
                import resource

                limit = memory_mb * 1024 * 1024
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                serve(Connection(fds[0]))
            finally:
                os._exit(0)
        os.close(fds[0])
        ctl.sendall(pid.to_bytes(8, "big"))


if __name__ == "__main__":
    zygote(int(sys.argv[-2]), int(sys.argv[-1]))
