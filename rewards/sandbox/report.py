"""What a run produced, on the host: verify the signed records and turn them into a :class:`TestReport`."""

import hmac
import re
from dataclasses import dataclass, field

from .cases import outputs_match

TAIL_BYTES = 4096


@dataclass
class TestResult:
    index: int
    passed: bool
    error: str = ""
    duration_s: float = 0.0
    output: str | None = None  # stdin/stdout cases: what the program printed (capped)
    unjudgeable: bool = False  # the test needed behaviour across the judge boundary (see .judge)


@dataclass
class TestReport:
    """``status``, first that applies: no_tests | sandbox_error (the harness did not start) |
    tampered (a forged record) | error (the program raised on load) | timeout | crashed (the
    process ended before the tests finished, e.g. ``os._exit``) | unjudgeable (every test ran, and
    at least one needed an object's behaviour across the judge boundary: a comparison with a
    returned instance, a lambda argument...) | passed | failed. ``fraction`` = passed / tests."""

    passed: bool
    fraction: float
    status: str
    results: list[TestResult] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    layer: str = ""
    duration_s: float = 0.0
    exit_code: int | None = None
    judge: str = ""

    @property
    def num_passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def num_unjudgeable(self) -> int:
        return sum(r.unjudgeable for r in self.results)


_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t"}


def _parse_records(key: bytes, raw: bytes):
    """Verified records, or None when any line is forged, reordered or malformed."""
    records = []
    for n, line in enumerate(raw.split(b"\n")):
        if not line:
            continue
        try:
            body, mac = line.decode("utf-8").rsplit("\t", 1)
            seq, kind, index, ok, seconds, detail = body.split("\t", 5)
        except ValueError:
            return None
        expected = hmac.new(key, body.encode("utf-8"), "sha256").hexdigest()
        if not hmac.compare_digest(expected, mac) or int(seq) != len(records):
            return None
        detail = _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), detail)
        records.append((kind, int(index), ok == "1", float(seconds), detail))
    return records


def build_report(iso, key, job, out, err, res, timed_out, exit_code, duration, exceeded="") -> TestReport:
    """The report of one run from what the harness sent: ``res`` (signed records), ``out``/``err``
    (capped tails), whether the time ran out, the harness's exit code, and which job budget the
    harness killed the program for ("cpu" / "memory" / "")."""
    if exceeded:
        err = err + (b"\nsandbox: the job passed its %s budget (all its processes together); killed\n"
                     % (b"CPU-time" if exceeded == "cpu" else b"memory"))
    items, float_tol = job.items, job.float_tol
    n = len(items)
    results = [TestResult(i, False, "did not run") for i in range(n)]
    common = dict(stdout_tail=out.decode("utf-8", "replace"), stderr_tail=err.decode("utf-8", "replace"),
                  layer=iso.layer, duration_s=duration, exit_code=exit_code,
                  judge=job.judge if job.mode == "assert" else "host")
    records = _parse_records(key, res)
    if records is None:
        return TestReport(False, 0.0, "tampered", results, **common)
    kinds = [r[0] for r in records]
    if "hello" not in kinds:
        return TestReport(False, 0.0, "timeout" if timed_out else "sandbox_error", results, **common)
    status = None
    for kind, index, ok, seconds, detail in records:
        if kind == "loaded" and not ok:
            status = "error"
            results = [TestResult(i, False, "program failed to load: " + detail) for i in range(n)]
        elif kind == "test" and 0 <= index < n:
            results[index] = TestResult(index, ok, detail, seconds)
        elif kind == "unjudged" and 0 <= index < n:
            results[index] = TestResult(index, False, "unjudgeable: " + detail, seconds, unjudgeable=True)
        elif kind == "case" and 0 <= index < n:
            how, code, hexout = (detail.split(" ", 2) + ["", ""])[:3]
            try:
                printed = bytes.fromhex(hexout).decode("utf-8", "replace")
            except ValueError:
                return TestReport(False, 0.0, "tampered", results, **common)
            passed = ok and outputs_match(printed, items[index][1], float_tol=float_tol)
            error = "" if passed else (f"{how} {code}" if not ok else "wrong output")
            results[index] = TestResult(index, passed, error, seconds, printed[-TAIL_BYTES:])
    if status is None:
        if "done" in kinds:
            if any(r.unjudgeable for r in results):
                status = "unjudgeable"
            else:
                status = "passed" if all(r.passed for r in results) else "failed"
        elif timed_out or any(r.error.startswith("timeout") for r in results):
            status = "timeout"
        else:
            status = "crashed"  # the process ended before the tests finished (os._exit, a kill, ...)
    passed_count = sum(r.passed for r in results)
    return TestReport(status == "passed", passed_count / n, status, results, **common)
