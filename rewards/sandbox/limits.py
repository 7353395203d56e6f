"""Per-job limits and identities on the host: the rlimits the harness applies, the output caps, the
clean environment, and the unprivileged uids a job's processes run as when the host is root."""

import math
import os
import secrets
import threading

RESULT_CAP = 16 << 20
UID_BASE = 1_000_000
UID_SPAN = 1 << 30
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}

_uid_lock = threading.Lock()
_uid_next = [None]


def fresh_uids(n: int) -> list[int]:
    """``n`` unprivileged uids no earlier job of this process has used: consecutive numbers from a
    random start in ``[UID_BASE, UID_BASE + UID_SPAN)``, so two jobs of one process never share a uid
    until 2**30 uids have been handed out (two processes collide only if their random starts land
    within the number of jobs they run of each other)."""
    with _uid_lock:
        if _uid_next[0] is None or _uid_next[0][0] != os.getpid():
            _uid_next[0] = (os.getpid(), secrets.randbelow(UID_SPAN))
        pid, nxt = _uid_next[0]
        _uid_next[0] = (pid, (nxt + n) % UID_SPAN)
    return [UID_BASE + (nxt + k) % UID_SPAN for k in range(n)]


def wall_backstop(timeout_s: float) -> float:
    """The wall-clock limit of a job whose budget is ``timeout_s`` CPU-seconds."""
    return 3.0 * timeout_s + 2.0


def job_limits(*, timeout_s, memory_mb, nproc, fsize_mb, output_bytes, n_items, uids=(None, None)):
    """The limits dict the harness reads.

    Per process: ``cpu_s`` = ceil(timeout_s) + 1 (RLIMIT_CPU), ``memory_mb`` (RLIMIT_AS), ``nproc``,
    ``fsize_mb``, ``nofile``. Per job (every process of the program's pid namespace together, polled
    by the harness every 20 ms): ``job_cpu_s`` = timeout_s CPU-seconds and ``job_memory_mb`` =
    memory_mb of RSS. ``wall_s`` = 3 * timeout_s + 2 is only a backstop (a program that sleeps), so a
    job is not failed for CPU that other jobs took. ``uid`` / ``judge_uid``: the program's and the
    judge's uids (None: no uid change)."""
    # the result channel carries each stdin/stdout case's output as hex: room for all of them
    result_cap = RESULT_CAP + 2 * output_bytes * n_items + n_items * 256
    return {"cpu_s": math.ceil(timeout_s) + 1, "memory_mb": memory_mb, "fsize_mb": fsize_mb, "nofile": 64,
            "nproc": nproc, "uid": uids[0], "judge_uid": uids[1], "wall_s": wall_backstop(timeout_s),
            "job_cpu_s": float(timeout_s), "job_memory_mb": memory_mb,
            "case_output_bytes": output_bytes, "result_cap": result_cap}
