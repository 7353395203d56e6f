"""The ``gsm8k_steps`` verifier: one reward per line of a worked GSM8K solution, for process supervision.

GSM8K's reference solutions, and models trained on them, annotate each calculation with a calculator tag:
``Natalia sold 48/2 = <<48/2=24>>24 clips in May.`` This verifier checks those tags line by line and returns the
step-reward form of ``trl_grpo_plus.step_rewards`` (``process_supervision=True``):

- **a line with one or more tags** is a step ending at the end of the line. It earns ``correct`` (1.0) when every
  tag ``<<expr=result>>`` holds: ``expr`` is plain arithmetic (numbers, + − × ÷, //, %, small integer powers,
  parentheses) whose exact value, rounded to the decimals written in ``result``, equals ``result``, and the number
  written right after the tag (if any) is ``result`` too. Anything else (a wrong result, a tag that is not
  arithmetic, a number after the tag that contradicts it) earns ``wrong`` (0.0): a tag it cannot check never pays.
- **the final answer** is a step ending at the end of the completion: ``correct`` when the completion's final
  number (``gsm8k.extract_answer``, strict: ``#### N`` or an explicit answer) equals the gold, else ``wrong``.
  It is weighted by ``answer_weight``.
- Lines without a tag are not steps (their tokens share the advantage of the next step). When the last tagged line
  ends the text, the answer step takes its place (two steps cannot end at the same offset).

None when the gold has no number (the answer cannot be judged). ``return_steps=False`` returns the mean step reward
instead (a float per completion: the fraction of correct steps, usable without process supervision and in
evaluation). ``stats``: ``steps``, ``steps_correct``, ``steps_wrong``, ``unparsable_tags``, ``answer_correct``,
``answer_wrong``, ``no_answer``, ``gold_missing``.

What it does not check: whether a calculation is the right one for the problem (only that it is computed right),
and calculations written without a tag.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from .base import Verifier
from .gsm8k import extract_answer, extract_gold, parse_number
from .registry import register_verifier

__all__ = ["GSM8KStepsVerifier", "check_tag", "evaluate_arithmetic", "solution_steps"]

_TAG = re.compile(r"<<([^<>=]{1,200})=([^<>]{1,60})>>")
_AFTER = re.compile(r"\s?(-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?)")
_MAX_MAGNITUDE = Fraction(10) ** 30


def evaluate_arithmetic(expr: str) -> Fraction | None:
    """The exact value of a plain arithmetic expression, or None when it is not one (never eval)."""
    text = expr.replace("$", "").replace("×", "*").replace("÷", "/").replace("−", "-")
    text = re.sub(r"(?<=\d)\s*x\s*(?=[\d(])", "*", text)  # 3 x 4 as a product, never a variable x
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text).strip()
    if not text or len(text) > 200:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return None
    try:
        value = _value(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError):
        return None
    return value


def _value(node) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        inner = _value(node.operand)
        return inner if isinstance(node.op, ast.UAdd) else -inner
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left), _value(node.right)
        op = type(node.op)
        if op is ast.Add:
            out = left + right
        elif op is ast.Sub:
            out = left - right
        elif op is ast.Mult:
            out = left * right
        elif op is ast.Div:
            out = left / right
        elif op is ast.FloorDiv:
            out = Fraction(left // right)
        elif op is ast.Mod:
            out = left % right
        elif op is ast.Pow and right.denominator == 1 and abs(right) <= 12:
            out = left ** int(right)
        else:
            raise ValueError("not plain arithmetic")
        if abs(out) > _MAX_MAGNITUDE:
            raise OverflowError("too large")
        return out
    raise ValueError("not plain arithmetic")


def _decimals(result: str) -> int:
    digits = result.replace(",", "").strip().rstrip(".")
    return len(digits.split(".", 1)[1]) if "." in digits else 0


def check_tag(expr: str, result: str, after: str | None = None) -> bool | None:
    """True when ``<<expr=result>>`` holds (and the number written ``after`` it, if any, is ``result``); False when
    it does not; None when ``expr`` or ``result`` is not something this module can check."""
    value, stated = evaluate_arithmetic(expr), parse_number(result)
    if value is None or stated is None:
        return None
    places = _decimals(result)
    rounded = Fraction(round(value * 10**places), 10**places)  # round half to even, like Python's round()
    if value != stated and rounded != stated:
        return False
    if after is not None:
        written = parse_number(after)
        if written is not None and written != stated:
            return False
    return True


def solution_steps(text: str) -> list[tuple[int, list[bool | None]]]:
    """(end offset of the line, verdict of each tag on it) for every line of ``text`` that holds a tag."""
    steps, start = [], 0
    for line in text.split("\n"):
        end = start + len(line)
        verdicts = []
        for match in _TAG.finditer(line):
            following = _AFTER.match(line, match.end())
            verdicts.append(check_tag(match.group(1), match.group(2), following.group(1) if following else None))
        if verdicts:
            steps.append((end, verdicts))
        start = end + 1
    return steps


@register_verifier("gsm8k_steps")
class GSM8KStepsVerifier(Verifier):
    """Step rewards for GSM8K-style worked solutions (module docstring). Options: ``gold_column`` ("answer"),
    ``correct`` (1.0), ``wrong`` (0.0), ``answer_weight`` (1.0: the final answer step's reward is multiplied by
    it), ``return_steps`` (True), ``name``."""

    def __init__(self, *, gold_column: str = "answer", correct: float = 1.0, wrong: float = 0.0,
                 answer_weight: float = 1.0, return_steps: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.gold_column, self.correct, self.wrong = gold_column, float(correct), float(wrong)
        self.answer_weight, self.return_steps = float(answer_weight), return_steps

    def score(self, completion: str, **row):
        gold = extract_gold(row.get(self.gold_column))
        if gold is None:
            self.stats["gold_missing"] += 1
            return None
        steps = []
        for end, verdicts in solution_steps(completion):
            ok = all(v is True for v in verdicts)
            self.stats["unparsable_tags"] += sum(v is None for v in verdicts)
            self.stats["steps_correct" if ok else "steps_wrong"] += 1
            if end >= 1:
                steps.append((end, self.correct if ok else self.wrong))
        answer = extract_answer(completion, mode="strict")
        if answer is None:
            self.stats["no_answer"] += 1
        answered = answer is not None and parse_number(answer) == parse_number(gold)
        self.stats["answer_correct" if answered else "answer_wrong"] += 1
        end = max(len(completion), 1)
        if steps and steps[-1][0] >= end:  # the last tagged line ends the text: the answer step takes its place
            steps.pop()
        steps.append((end, self.answer_weight * (self.correct if answered else self.wrong)))
        self.stats["steps"] += len(steps)
        if self.return_steps:
            return steps
        return sum(r for _, r in steps) / len(steps)
