"""The ``code`` verifier: run the completion's program against the row's tests in the sandbox.

Score = passed tests / tests (or 1.0 / 0.0 with ``binary=True``). The program is the last fenced
```` ```python ```` (or ```` ```py ````, or bare ```` ``` ````) block of the completion, else the whole
completion. A final fence that was opened but never closed (a truncated completion) counts as a
block. Tests come from the ``tests`` column (configurable): assert strings, assert code or
stdin/stdout cases, see :func:`trl_grpo_plus.rewards.sandbox.normalize_tests`. Rows without that
column may give HumanEval's ``test`` + ``entry_point`` or MBPP's ``test_list`` (+ ``test_setup_code``).

HumanEval completions that continue the prompt (a function body, no ``def <entry_point>``) are run
as ``prompt + completion`` when the row has a ``prompt`` string.

A row without tests, or a run the sandbox itself could not start, scores ``None`` (TRL skips it) and
is counted in ``stats``. A program that fails, times out or forges a record scores 0 for those tests.

Tests are judged in a process apart from the program (``judge="isolated"``, the default; see
:mod:`trl_grpo_plus.rewards.sandbox.judge`): only plain data crosses, so neither an always-equal return
value nor a frame walk to the expected value can pay. A sample whose tests need an object's behaviour
across that line is ``unjudgeable``: it scores ``None`` (``on_unjudgeable="none"``, TRL leaves it out)
or ``0.0`` (``on_unjudgeable="zero"``), and is counted in ``stats["status_unjudgeable"]``.
``judge="in_process"`` runs the tests in the program's interpreter (the classic harness, with known
holes: ``docs/sandbox.md``).
"""

from __future__ import annotations

import logging
import re

from .base import Verifier
from .registry import register_verifier
from .sandbox import JUDGES, TestReport, probe_isolation, run_many, run_tests

__all__ = ["CodeVerifier", "TestReport", "extract_program", "probe_isolation", "run_many", "run_tests"]

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_program(text: str) -> str:
    """The last fenced python block (a bare fence counts; an unclosed last fence counts), else the
    whole text. Fences tagged with another language are skipped when a python one exists."""
    blocks = [(m.group(1), m.group(2)) for m in _FENCE.finditer(text)]
    if not blocks:
        return text
    tagged = [code for lang, code in blocks if lang]
    return (tagged or [code for _, code in blocks])[-1]


@register_verifier("code")
class CodeVerifier(Verifier):
    """TRL reward function over the sandbox. Options: ``tests_column`` (default ``"tests"``),
    ``binary``, ``timeout_s``, ``memory_mb``, ``workers`` (default: CPU cores), ``float_tol``,
    ``isolation`` (``auto``/``bwrap``/``unshare``/``none``), ``allow_unsafe``, ``progress``,
    ``judge`` (``isolated``, default, or ``in_process``), ``on_unjudgeable`` (``none``, default, or
    ``zero``), ``eq_guard`` (in-process judge only: fail comparisons with a program-defined
    ``__eq__``; see :func:`run_tests`)."""

    def __init__(self, *, tests_column: str = "tests", binary: bool = False, timeout_s: float = 5.0,
                 memory_mb: int = 1024, workers: int | None = None, float_tol: float | None = None,
                 isolation: str = "auto", allow_unsafe: bool = False, progress: bool | None = None,
                 eq_guard: bool = True, judge: str = "isolated", on_unjudgeable: str = "none",
                 name: str | None = None):
        super().__init__(name=name)
        if judge not in JUDGES:
            raise ValueError(f"judge={judge!r}: expected 'isolated' (tests in a process of their own, the default) "
                             f"or 'in_process' (tests share the program's interpreter; see docs/sandbox.md).")
        if on_unjudgeable not in ("none", "zero"):
            raise ValueError(f"on_unjudgeable={on_unjudgeable!r}: expected 'none' (score None, TRL leaves the sample "
                             f"out; the default) or 'zero' (score 0.0).")
        self.judge = judge
        self.on_unjudgeable = on_unjudgeable
        self.tests_column = tests_column
        self.binary = binary
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers
        self.float_tol = float_tol
        self.isolation = isolation
        self.allow_unsafe = allow_unsafe
        self.progress = progress
        self.eq_guard = eq_guard

    def job(self, completion: str, row: dict) -> dict | None:
        """Arguments of one :func:`run_tests` call for a completion and its dataset row, or None."""
        program = extract_program(completion)
        entry_point = row.get("entry_point") or None
        setup = row.get("test_setup_code") or ""
        tests = row.get(self.tests_column)
        if tests is None and row.get("test") is not None:
            tests = row["test"]
        elif tests is None and row.get("test_list") is not None:
            tests = row["test_list"]
            entry_point = None
        if tests is None or (isinstance(tests, (list, tuple)) and not tests):
            return None
        if not isinstance(tests, str) or tests.lstrip()[:1] in "[{":
            entry_point = None  # check(<entry_point>) only completes HumanEval-style test code
        prompt = row.get("prompt")
        if entry_point and isinstance(prompt, str) and not re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", program):
            program = prompt + program
        return dict(program=program, tests=tests, entry_point=entry_point, setup_code=setup,
                    timeout_s=self.timeout_s, memory_mb=self.memory_mb, float_tol=self.float_tol,
                    isolation=self.isolation, allow_unsafe=self.allow_unsafe, eq_guard=self.eq_guard,
                    judge=self.judge)

    def score_report(self, report: TestReport) -> float | None:
        if report.status in ("sandbox_error", "no_tests"):
            return None
        self.stats[f"status_{report.status}"] += 1
        if report.status == "unjudgeable":
            return None if self.on_unjudgeable == "none" else 0.0
        if self.binary:
            return 1.0 if report.passed else 0.0
        return report.fraction

    def score_batch(self, prompts, completions, columns):
        rows = []
        for i in range(len(completions)):
            rows.append({k: (v[i] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v)
                         for k, v in columns.items()})
            if isinstance(prompts, (list, tuple)) and len(prompts) == len(completions) and "prompt" not in rows[-1]:
                rows[-1]["prompt"] = prompts[i] if isinstance(prompts[i], str) else None
        jobs = []
        for c, row in zip(completions, rows):
            try:
                jobs.append(self.job(c, row))
            except Exception as exc:
                logger.warning("%s: could not build a sandbox job: %r", self.__name__, exc)
                jobs.append(None)
        todo = [j for j in jobs if j is not None]
        reports = iter(run_many(todo, workers=self.workers, progress=self.progress)) if todo else iter(())
        scores = []
        for j in jobs:
            if j is None:
                self.stats["no_tests"] += 1
                scores.append(None)
            else:
                scores.append(self.score_report(next(reports)))
        return scores

    def score(self, completion: str, **row) -> float | None:
        job = self.job(completion, row)
        return None if job is None else self.score_report(run_tests(**job))
