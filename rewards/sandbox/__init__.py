"""Run untrusted Python programs against tests in a local, layered sandbox (no Docker, no service).

Two verbs: :func:`run_tests` (one program) and :func:`run_many` (a batch on a thread pool).
:func:`probe_isolation` says which layer is in use. User documentation, the threat model and measured
figures: ``docs/sandbox.md``.

The package, one job per module:

==================  ======  ==============================================================
module              runs    job
==================  ======  ==============================================================
:mod:`.cases`       host    normalise the accepted test forms; compare stdin/stdout outputs
:mod:`.layers`      host    the isolation layers (bwrap, unshare, none) and the probe
:mod:`.limits`      host    rlimits, output caps, clean environment, fresh uids per job
:mod:`.pool`        host    run a job: fresh interpreter, or a warm fork server per worker
:mod:`.report`      host    verify the signed records, build the :class:`TestReport`
:mod:`.protocol`    both    the plain-data codec that is the judge boundary
:mod:`.harness`     inside  entry points, privilege drop, limits, one job's processes
:mod:`.program`     inside  the untrusted program's process: load it, answer the judge
:mod:`.judge`       inside  the tests' process: proxies, one record per test
:mod:`.in_process`  inside  the opt-in in-process judge (program and tests share a process)
:mod:`.stdio`       inside  stdin/stdout cases (the host compares the outputs)
==================  ======  ==============================================================

Judges (assert-style tests): ``judge="isolated"`` (the default) runs the program and the tests in two
processes that exchange plain data only, so no expected value ever enters the program's process and
whatever the program returns is data, never behaviour; ``judge="in_process"`` is the classic
harness (program and tests share an interpreter), kept as an explicit opt-in with its known holes
listed in ``docs/sandbox.md``. stdin/stdout cases are always compared on the host.

Every layer also has: a fresh ``python -I`` in a new session with a clean environment, the wall clock
limit, capped captured output, and rlimits (CPU, AS, FSIZE, NOFILE, NPROC, CORE=0) set before user
code runs. As root each job's processes drop to fresh unprivileged uids, and the default runner is a
fork server per worker that never reads job data itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .cases import normalize_tests, outputs_match
from .layers import LAYERS, Isolation, Layer, SandboxUnavailable, _isolation_for, _probe_layer, probe_isolation
from .pool import HARNESS_SOURCE, Job, run_forkserver, run_fresh, shutdown_servers
from .protocol import MalformedData, NotPlainData, decode_plain, encode_plain
from .report import TestReport, TestResult

__all__ = [
    "HARNESS_SOURCE",
    "JUDGES",
    "LAYERS",
    "Isolation",
    "Layer",
    "MalformedData",
    "NotPlainData",
    "SandboxUnavailable",
    "TestReport",
    "TestResult",
    "decode_plain",
    "encode_plain",
    "normalize_tests",
    "outputs_match",
    "probe_isolation",
    "run_many",
    "run_tests",
    "shutdown_servers",
]

JUDGES: tuple[str, ...] = ("isolated", "in_process")


def run_tests(program: str, tests, *, timeout_s: float = 5.0, memory_mb: int = 1024,
              entry_point: str | None = None, setup_code: str = "", float_tol: float | None = None,
              isolation: str = "auto", allow_unsafe: bool = False, nproc: int = 32,
              fsize_mb: int = 16, tmp_mb: int = 64, output_bytes: int = 1 << 20,
              fresh_process: bool = False, eq_guard: bool = True, judge: str = "isolated") -> TestReport:
    """Run ``program`` against ``tests`` in the sandbox and report which tests passed.

    ``judge`` (assert-style tests): ``"isolated"`` (default) runs the tests in a judge process of
    their own that calls the program's top-level functions through proxies, with plain data both
    ways (:mod:`.judge`); a test that needs an object's behaviour across that line (comparing a
    returned instance, passing a lambda) is reported ``unjudgeable``. ``"in_process"`` runs the tests
    in the program's interpreter (the classic harness; see ``docs/sandbox.md`` for its holes), where
    ``eq_guard`` rewrites each test's ``==``/``!=``/``in``/``not in`` to fail on a program-defined
    ``__eq__``/``__ne__``. ``eq_guard`` has no effect with the isolated judge, which needs none.

    As root (bwrap or unshare layer) the job runs on a fork server of this worker, which saves the
    ~25-50 ms interpreter start-up; ``fresh_process=True`` starts a new ``python -I`` (inside a new
    sandbox) for this program instead. Non-root hosts always start a new one.

    ``timeout_s`` is the wall-clock budget of the whole run (program load plus every test);
    ``RLIMIT_CPU`` is ``ceil(timeout_s) + 1`` per process. ``memory_mb`` is ``RLIMIT_AS`` per process.
    ``fraction`` = passed tests / tests; a test counts only when its signed record arrived. For
    stdin/stdout cases the expected outputs stay on the host and are compared by :func:`outputs_match`.
    """
    if not isinstance(program, str):
        raise TypeError(f"program must be a str of Python source, got {type(program).__name__}.")
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s={timeout_s!r}: give a positive number of seconds.")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise ValueError(f"memory_mb={memory_mb!r}: give an int >= 64 (Python itself needs ~30 MB).")
    if judge not in JUDGES:
        raise ValueError(f"judge={judge!r}: expected 'isolated' (tests in a process of their own, the default) "
                         f"or 'in_process' (tests share the program's interpreter; see docs/sandbox.md).")
    mode, items = normalize_tests(tests, entry_point=entry_point)
    if not items:
        return TestReport(False, 0.0, "no_tests")
    iso = _isolation_for(isolation, allow_unsafe)
    job = Job(program, tuple(items), mode, float_tol=float_tol, timeout_s=float(timeout_s), memory_mb=memory_mb,
              setup_code=setup_code, nproc=nproc, fsize_mb=fsize_mb, tmp_mb=tmp_mb, output_bytes=output_bytes,
              eq_guard=eq_guard, judge=judge)
    if not fresh_process and (iso.layer == "bwrap" or (iso.layer == "unshare" and os.geteuid() == 0)):
        return run_forkserver(iso, job)
    return run_fresh(iso, job)


def run_many(jobs, *, workers: int | None = None, progress: bool | None = None, desc: str = "sandbox",
             **options) -> list[TestReport]:
    """Run many programs concurrently; ``jobs`` holds ``(program, tests)`` pairs or dicts of
    :func:`run_tests` keyword arguments (``program``, ``tests``, ...). ``workers`` defaults to the
    number of CPU cores; a tqdm bar is shown for 32 jobs or more (``progress=None``). A job whose
    arguments are invalid gets a ``sandbox_error`` report instead of raising, so the batch finishes."""
    jobs = [dict(program=j[0], tests=j[1]) if isinstance(j, (tuple, list)) else dict(j) for j in jobs]
    workers = workers or os.cpu_count() or 1
    first = {**options, **jobs[0]} if jobs else options
    if first.get("isolation", "auto") == "auto":
        _isolation_for("auto", first.get("allow_unsafe", False))  # probe once, raise before threading

    def one(job):
        try:
            return run_tests(**{**options, **job})
        except SandboxUnavailable:
            raise
        except Exception as exc:
            return TestReport(False, 0.0, "sandbox_error", stderr_tail=repr(exc))

    show = len(jobs) >= 32 if progress is None else progress
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs) or 1))) as pool:
        it = pool.map(one, jobs)
        if show:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(jobs), desc=desc, unit="prog")
        return list(it)
