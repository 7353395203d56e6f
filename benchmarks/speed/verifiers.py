"""Speed: our ``math`` verifier vs math-verify used naively, on the same MATH-500 work, in one run.

    python -m trl_grpo_plus.benchmarks.speed.verifiers [--data-file F] [--limit N] [--group-batch K]

The work: for each MATH-500 problem, G = 8 completions derived from its reference solution:

0. the reference solution, verbatim;
1. a wrong final answer (the boxed answer replaced by another problem's answer);
2. the answer reformatted (``\\frac`` -> ``\\dfrac``, spaces added) inside ``\\boxed{}``;
3. the answer in ``<think>...</think><answer>...</answer>`` tags;
4. the solution ending in "The final answer is $...$." (no box);
5. a near-miss: the boxed answer with an extra trailing ``0`` (5 -> 50) or ``+1``;
6. the answer reformatted differently (wrapped in ``\\left( ... \\right)`` groups / spacing);
7. the solution truncated before its box (label depends: the strict default reads the last math span
   before the cut, or no answer when the cut falls inside a formula).

Naive: for every completion, ``math_verify.parse(gold)``, ``math_verify.parse(completion)``,
``math_verify.verify(gold, pred)``, single process, math-verify's own (main-thread) timeouts.
Ours: ``get_verifier("math")`` called once per batch of ``--group-batch`` problems (``K*G``
completions, like one TRL generation batch), after starting its worker pool. The two alternate batch
by batch, so a change in machine load during the run affects both alike.

Printed: pairs per second for each, the ratio, accuracy of each against the intended labels, the
worst-case latency of each (naive: one pair; ours: one item inside the pool, and one whole call), and
the CPU seconds each used (ours: this process plus its pool workers, read from ``/proc`` on Linux).
The wall-clock ratio depends on how many cores are free (ours runs its workers in parallel); the
CPU-time ratio does not, so both are printed, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import time

G = 8
DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "math" / "math500_test.jsonl"


def _replace_last_box(solution: str, new: str) -> str:
    from trl_grpo_plus.rewards.math import _BOX_RE

    hits = list(_BOX_RE.finditer(solution))
    if not hits:
        return solution + f" \\boxed{{{new}}}"
    m = hits[-1]
    i = m.end()
    if i < len(solution) and solution[i] == "{":
        depth = 0
        for j in range(i, len(solution)):
            depth += {"{": 1, "}": -1}.get(solution[j], 0)
            if depth == 0:
                return solution[:m.start()] + f"\\boxed{{{new}}}" + solution[j + 1:]
    return solution[:m.start()] + f"\\boxed{{{new}}}"


def _before_box(solution: str) -> str:
    from trl_grpo_plus.rewards.math import _BOX_RE

    hits = list(_BOX_RE.finditer(solution))
    return solution[:hits[-1].start()] if hits else solution


def make_completions(rows: list[dict]) -> list[tuple[str, list[str], list[bool | None]]]:
    """Per problem ``(gold, [8 completions], [intended label or None when it depends])``."""
    work = []
    for k, row in enumerate(rows):
        sol, ans = row["solution"], row["answer"]
        other = rows[(k + 1) % len(rows)]["answer"]
        reformatted = re.sub(r"\\frac", r"\\dfrac", ans).replace(",", ", ")
        if "\\left" in ans:
            regrouped = ans.replace("\\left", "").replace("\\right", "") + " "
        else:
            regrouped = ans.replace("(", "\\left( ").replace(")", " \\right)") + " "
        near = ans + "0" if re.fullmatch(r"-?[1-9]\d*", ans) else f"{ans}+1"
        comps = [
            sol,
            _replace_last_box(sol, other),
            _replace_last_box(sol, reformatted),
            f"<think>{_before_box(sol)}</think><answer>{ans}</answer>",
            _before_box(sol) + f"The final answer is ${ans}$.",
            _replace_last_box(sol, near),
            _replace_last_box(sol, " " + regrouped),
            _before_box(sol),
        ]
        labels = [True, None, True, True, True, False, True, None]
        work.append((ans, comps, labels))
    return work


def naive_pair(gold: str, completion: str) -> bool:
    """math-verify used naively: parse gold, parse completion, verify (main-thread timeouts)."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$"), parse(completion)))
    except BaseException:  # noqa: BLE001 - math-verify's TimeoutException is a BaseException
        return False


def run(work, group_batch: int) -> dict:
    """Score every batch with both, alternating (ours, then naive, batch by batch), so that a change
    in machine load during the run hits both alike."""
    from trl_grpo_plus.rewards import _math_pool, get_verifier

    verifier = get_verifier("math")
    pool = _math_pool.get_pool()
    pool.start()  # start-up (once per process) is not part of the throughput
    naive_pair("1", "1")  # and math-verify's lazy imports are not part of the naive one
    pool.max_item_s = 0.0
    ours, naive = [], []
    t_ours = t_naive = worst_call = worst_naive = cpu_ours = cpu_naive = 0.0
    workers_cpu0 = _workers_cpu_s(pool)
    for b in range(0, len(work), group_batch):
        batch = work[b:b + group_batch]
        completions = [c for _, comps, _ in batch for c in comps]
        answers = [gold for gold, comps, _ in batch for _ in comps]
        t, c = time.perf_counter(), time.process_time()
        scores = verifier(prompts=[""] * len(completions), completions=completions, answer=answers)
        elapsed = time.perf_counter() - t
        cpu_ours += time.process_time() - c
        t_ours += elapsed
        worst_call = max(worst_call, elapsed)
        ours += [s == 1.0 for s in scores]
        c = time.process_time()
        for gold, completion in zip(answers, completions):
            t = time.perf_counter()
            naive.append(naive_pair(gold, completion))
            elapsed = time.perf_counter() - t
            t_naive += elapsed
            worst_naive = max(worst_naive, elapsed)
        cpu_naive += time.process_time() - c
    workers_cpu1 = _workers_cpu_s(pool)
    if workers_cpu0 is not None and workers_cpu1 is not None:
        cpu_ours += workers_cpu1 - workers_cpu0
    else:
        cpu_ours = float("nan")
    return dict(ours=ours, naive=naive, t_ours=t_ours, t_naive=t_naive, worst_call=worst_call,
                worst_naive=worst_naive, worst_item=pool.max_item_s, stats=dict(verifier.stats),
                cpu_ours=cpu_ours, cpu_naive=cpu_naive)


def _workers_cpu_s(pool) -> float | None:
    """CPU seconds used so far by the pool's current workers (Linux ``/proc``), or None: unknown, or
    a worker was replaced since (its time would be lost)."""
    try:
        total = 0.0
        for w in pool._workers:
            fields = open(f"/proc/{w.pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total if pool.restarts == 0 else None
    except (OSError, ValueError, IndexError):
        return None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-file", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--group-batch", type=int, default=16, help="problems per reward call (x8 completions)")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(args.data_file, encoding="utf-8")][: args.limit]
    work = make_completions(rows)
    n = len(work) * G
    print(f"MATH-500 speed: {len(work)} problems x G={G} = {n} (gold, completion) pairs; "
          f"{os.cpu_count()} CPUs; pool workers: {__import__('trl_grpo_plus.rewards._math_pool', fromlist=['x']).default_workers()}")

    r = run(work, args.group_batch)
    ours, naive, t_ours, t_naive = r["ours"], r["naive"], r["t_ours"], r["t_naive"]
    worst_item, worst_call, worst_naive, stats = r["worst_item"], r["worst_call"], r["worst_naive"], r["stats"]

    labels = [lab for _, _, labs in work for lab in labs]
    def acc(v):
        return sum(x == lab for x, lab in zip(v, labels) if lab is not None) / sum(lab is not None for lab in labels)
    disagree = sum(a != b for a, b in zip(ours, naive))
    res = {
        "pairs": n,
        "naive_pairs_per_s": n / t_naive,
        "ours_pairs_per_s": n / t_ours,
        "ratio": t_naive / t_ours,
        "naive_worst_pair_s": worst_naive,
        "ours_worst_item_s": worst_item,
        "ours_worst_call_s": worst_call,
        "ours_worst_call_completions": args.group_batch * G,
        "naive_label_accuracy": acc(naive),
        "ours_label_accuracy": acc(ours),
        "verdicts_differ": disagree,
        "ours_stats": stats,
        "naive_cpu_s": r["cpu_naive"],
        "ours_cpu_s": r["cpu_ours"],
        "cpu_ratio": r["cpu_naive"] / r["cpu_ours"],
        "load_average": os.getloadavg()[0],
    }
    print(f"naive math-verify : {res['naive_pairs_per_s']:8.1f} pairs/s   worst pair {worst_naive:.3f} s   "
          f"label accuracy {res['naive_label_accuracy']:.3f}")
    print(f"ours (math)       : {res['ours_pairs_per_s']:8.1f} pairs/s   worst item {worst_item:.3f} s   "
          f"worst call ({args.group_batch * G} completions) {worst_call:.3f} s   label accuracy {res['ours_label_accuracy']:.3f}")
    print(f"ratio ours/naive  : {res['ratio']:.2f}x wall clock, {res['cpu_ratio']:.2f}x CPU time "
          f"(naive {res['naive_cpu_s']:.2f} s, ours {res['ours_cpu_s']:.2f} s incl. workers)   "
          f"load average {res['load_average']:.1f}")
    print(f"verdicts that differ: {disagree}   ours stats: {stats}")
    return res


if __name__ == "__main__":
    main()
