"""A persistent pool of killable math-verify workers, safe to call from any thread.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck task (a hung item would
hold its worker, and ``shutdown`` waits for it), and its ``fork`` start method copies a trainer
process that may hold torch threads. Here the workers are forked from a small zygote process (see
``_math_worker.py``) that imported only sympy and math-verify, so:

* start-up is paid once per trainer process (about 1 s for the zygote), a worker costs a fork (ms);
* an item that overruns its deadline gets its worker SIGKILLed; the item scores "timeout", the rest
  of its group goes to a fresh worker, and the caller never waits longer than the deadline;
* no signal is used in the calling process, so it works from TRL's threads and any other thread.

Work arrives as groups ``(gold, [pred, ...])``: a worker parses the gold once (and caches it), then
checks every prediction against it. Groups are spread over the workers; when there are fewer groups
than workers, groups are split into chunks so that all workers are busy.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, wait

logger = logging.getLogger(__name__)

WORKER_SCRIPT = pathlib.Path(__file__).with_name("_math_worker.py")
# The parent kills a worker this long after the soft (in-worker) timer should have fired.
HARD_KILL_GRACE_S = 0.1
GOLD_TIMEOUT_S = 5.0  # the least time a gold parse gets (see MathPool.run)
ZYGOTE_START_TIMEOUT_S = 120.0

# Run the worker file by path, with neither the cwd nor rewards/ on sys.path: rewards/math.py and
# rewards/code.py would otherwise shadow the standard library's math and code modules.
_BOOT = (
    "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
    "import runpy; runpy.run_path(sys.argv[1], run_name='__main__')"
)

TIMEOUT = "timeout"  # verdict of an item that ran out of time
CRASH = "crash"  # verdict of an item whose worker died on its own


def default_workers() -> int:
    env = os.environ.get("TRL_GRPO_PLUS_MATH_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(8, os.cpu_count() or 1))


class _Worker:
    __slots__ = ("pid", "conn", "job", "expect", "deadline", "started")

    def __init__(self, pid: int, conn: Connection):
        self.pid = pid
        self.conn = conn
        self.job = None  # (group index, first item index, gold, preds)
        self.expect = -1  # -1: the gold answer is next; i >= 0: item i of the job is next
        self.deadline = 0.0
        self.started = 0.0  # when the current item (or gold parse) began

    def kill(self) -> None:
        try:
            os.kill(self.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class MathPool:
    """``run(groups, timeout_s)`` -> per group ``(gold_status, verdicts)``.

    ``gold_status`` is True (parsed), False (unparsable) or "timeout"; ``verdicts`` holds, per
    prediction, True / False / "timeout" / "crash" (None for every item when the gold failed).
    """

    def __init__(self, workers: int | None = None, *, soft_timeout: bool = True, memory_mb: int | None = None):
        self.n_workers = workers or default_workers()
        # address-space limit of each worker (RLIMIT_AS); 0 = none
        self.memory_mb = int(os.environ.get("TRL_GRPO_PLUS_MATH_WORKER_MEMORY_MB", 2048)) if memory_mb is None else memory_mb
        # soft_timeout=False turns off the in-worker timer, so every overrun ends in a kill.
        self.soft_timeout = soft_timeout
        self.owner_pid = os.getpid()
        self.restarts = 0  # workers killed or lost and replaced
        self.gold_parses = 0  # golds parsed by a worker (not served from a worker's cache)
        self.max_item_s = 0.0  # longest time one gold parse or one item took (as seen from here)
        self._lock = threading.Lock()
        self._zygote: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._workers: list[_Worker] = []

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        with self._lock:
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._zygote is not None and self._zygote.poll() is None:
            while len(self._workers) < self.n_workers:
                self._workers.append(self._fork())
            return
        self._shutdown_locked()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(WORKER_SCRIPT), str(child.fileno()), str(self.memory_mb)],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child.close()
        parent.settimeout(ZYGOTE_START_TIMEOUT_S)
        try:
            ready = parent.recv(1)
        except socket.timeout:
            ready = b""
        if ready != b"R":
            self._zygote.kill()
            self._zygote = None
            parent.close()
            raise RuntimeError(
                f"the math-verify worker process ({WORKER_SCRIPT}) did not start; is math-verify installed?"
            )
        parent.settimeout(30.0)
        self._ctl = parent
        self._workers = [self._fork() for _ in range(self.n_workers)]

    def _fork(self) -> _Worker:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self._ctl, [b"F"], [theirs.fileno()])
            raw = b""
            while len(raw) < 8:
                chunk = self._ctl.recv(8 - len(raw))
                if not chunk:
                    raise RuntimeError("the math-verify zygote process exited")
                raw += chunk
        finally:
            theirs.close()
        return _Worker(int.from_bytes(raw, "big"), Connection(mine.detach()))

    def close(self) -> None:
        with self._lock:
            self._shutdown_locked()

    def _shutdown_locked(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._zygote is not None:
            try:
                self._zygote.kill()
                self._zygote.wait(timeout=5)
            except Exception:
                pass
            self._zygote = None

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self.restarts += 1
        idx = self._workers.index(w)
        try:
            self._workers[idx] = self._fork()
        except Exception:
            # The zygote is gone: restart everything on the next dispatch.
            self._workers.pop(idx)
            if self._zygote is not None:
                self._zygote.kill()

    # ------------------------------------------------------------------------------------- run
    def run(self, groups: list[tuple[str, list[str]]], timeout_s: float,
            gold_timeout_s: float | None = None) -> list[tuple[object, list]]:
        """Score the groups; ``timeout_s`` bounds each prediction, ``gold_timeout_s`` (default
        ``max(timeout_s, GOLD_TIMEOUT_S)``) each gold parse: golds are trusted data, and a cold parser
        can need close to a second for a gold like ``\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]``."""
        results = [[True, [None] * len(preds)] for _, preds in groups]
        if not groups:
            return [tuple(r) for r in results]
        with self._lock:
            self._ensure_started()
            jobs = collections.deque(self._plan(groups))
            hard = timeout_s + HARD_KILL_GRACE_S
            gold_s = max(timeout_s, GOLD_TIMEOUT_S) if gold_timeout_s is None else gold_timeout_s
            hard_gold = gold_s + HARD_KILL_GRACE_S
            while jobs or any(w.job is not None for w in self._workers):
                if not self._workers:
                    self._ensure_started()
                for w in self._workers:
                    if w.job is None and jobs:
                        job = jobs.popleft()
                        try:
                            w.conn.send(("group", job[2], job[3], timeout_s, self.soft_timeout, gold_s))
                        except OSError:
                            jobs.appendleft(job)
                            self._replace(w)
                            continue
                        w.job, w.expect, w.started = job, -1, time.monotonic()
                        w.deadline = w.started + hard_gold
                busy = [w for w in self._workers if w.job is not None]
                if not busy:
                    continue
                now = time.monotonic()
                ready = wait([w.conn for w in busy], timeout=max(0.0, min(w.deadline for w in busy) - now))
                ready = set(ready)
                for w in busy:
                    if w.conn in ready:
                        self._drain(w, results, jobs, hard)
                    elif time.monotonic() >= w.deadline:
                        self._fail_current(w, results, jobs, TIMEOUT)
        return [tuple(r) for r in results]

    def _plan(self, groups):
        """Jobs ``(group, first item, gold, preds)``: whole groups, or chunks when groups are few."""
        splits = max(1, self.n_workers // len(groups))
        for g, (gold, preds) in enumerate(groups):
            if not preds:
                continue
            size = max(1, -(-len(preds) // splits))
            for start in range(0, len(preds), size):
                yield (g, start, gold, preds[start:start + size])

    def _drain(self, w: _Worker, results, jobs, hard: float) -> None:
        while w.job is not None:
            try:
                if not w.conn.poll():
                    return
                msg = w.conn.recv()
            except (EOFError, OSError):
                self._fail_current(w, results, jobs, CRASH)
                return
            g, start, _, preds = w.job
            self.max_item_s = max(self.max_item_s, time.monotonic() - w.started)
            if msg[0] == "gold":
                self.gold_parses += bool(msg[2])
                if msg[1] is not True:
                    results[g][0] = msg[1]
                    w.job = None
                    return
                w.expect = 0
            else:
                _, i, verdict = msg
                results[g][1][start + i] = verdict
                w.expect = i + 1
                if w.expect >= len(preds):
                    w.job = None
                    return
            w.started = time.monotonic()
            w.deadline = w.started + hard

    def _fail_current(self, w: _Worker, results, jobs, verdict) -> None:
        """The worker overran or died: record the item it was on, requeue the rest, replace it."""
        g, start, gold, preds = w.job
        w.job = None
        self.max_item_s = max(self.max_item_s, time.monotonic() - w.started)
        if w.expect < 0:
            results[g][0] = TIMEOUT if verdict == TIMEOUT else False
        else:
            results[g][1][start + w.expect] = verdict
            rest = w.expect + 1
            if rest < len(preds):
                jobs.appendleft((g, start + rest, gold, preds[rest:]))
        logger.debug("math worker %d: %s; replacing it", w.pid, verdict)
        self._replace(w)


_POOL: MathPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> MathPool:
    """The process-wide pool (a new one after ``os.fork``: a child never drives its parent's)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.owner_pid != os.getpid():
            _POOL = MathPool()
        return _POOL


def configure_pool(workers: int | None = None) -> MathPool:
    """Replace the process-wide pool with one of ``workers`` workers (default: CPU count, max 8)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.owner_pid == os.getpid():
            _POOL.close()
        _POOL = MathPool(workers)
        return _POOL


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL.owner_pid == os.getpid():
        _POOL.close()
