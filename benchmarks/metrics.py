"""Metrics over per-problem sample scores. Pure functions on plain Python values.

Per problem ``i`` we have ``n`` samples with scores ``s_ij`` in {0, 1} (``None`` = the verifier could
not score it; it counts as wrong and is reported separately) and extracted answers ``a_ij``.

* **accuracy (top-1)**: ``mean_i s_i0``, the first sample (with greedy decoding, the only one).
* **avg@n**: ``mean_i mean_j s_ij``, the expected accuracy of one sample.
* **pass@k** (Chen et al. 2021, unbiased): with ``c_i`` correct out of ``n``,
  ``pass@k_i = 1 - C(n - c_i, k) / C(n, k)``, computed as ``1 - prod_{m=n-c_i+1}^{n} (1 - k/m)``
  for numerical stability; ``pass@k = mean_i pass@k_i``. Needs ``k <= n``.
* **maj@k**: majority vote over the first ``k`` samples' extracted answers. Answers are compared as
  strings after :func:`normalize_vote`; ``None`` answers do not vote. **Ties** go to the answer
  whose first occurrence comes earliest among the ``k`` samples. The problem counts as correct when
  the winning answer's first sample is correct. No votes at all -> wrong.
* **95% interval**: Wilson score interval for top-1 accuracy (a binomial proportion over problems,
  ``z = 1.959964``); percentile bootstrap over problems (1000 resamples, fixed seed) for avg@n,
  pass@k and maj@k, whose per-problem values are not Bernoulli.

Not covered: equivalence-aware voting (``1/2`` and ``\\frac{1}{2}`` vote separately).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Iterable, Sequence

Z95 = 1.959963984540054


def as_correct(score: float | None) -> float:
    """A verifier score as a correctness value in [0, 1]; ``None`` (unscorable) counts as 0."""
    if score is None:
        return 0.0
    return 1.0 if float(score) >= 0.5 else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` correct samples out of ``n`` (Chen et al. 2021)."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}.")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}. Draw at least k samples.")
    if n - c < k:
        return 1.0
    prod = 1.0
    for m in range(n - c + 1, n + 1):
        prod *= 1.0 - k / m
    return 1.0 - prod


def normalize_vote(answer: str | None) -> str | None:
    """Vote key of an extracted answer: whitespace removed, surrounding ``$`` stripped."""
    if answer is None:
        return None
    key = "".join(str(answer).split()).strip("$")
    return key or None


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of the sample whose answer wins the vote (first occurrence of the winner), or ``None``
    when no sample has an answer. Ties -> the answer that appears first."""
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    for j, a in enumerate(answers):
        key = normalize_vote(a)
        if key is None:
            continue
        counts[key] += 1
        first.setdefault(key, j)
    if not counts:
        return None
    winner = max(counts, key=lambda a: (counts[a], -first[a]))
    return first[winner]


def maj_at_k(answers: Sequence[str | None], scores: Sequence[float | None], k: int) -> float:
    """1.0 when the majority answer of the first ``k`` samples is correct, else 0.0."""
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: need 1 <= k <= {len(answers)} samples, got k={k}.")
    j = majority_vote(answers[:k])
    return 0.0 if j is None else as_correct(scores[j])


def wilson_interval(successes: float, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when ``total == 0``."""
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends, no float dust
    hi = 1.0 if successes >= total else min(1.0, centre + half)
    return (lo, hi)


def bootstrap_interval(values: Sequence[float], *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling problems)."""
    n = len(values)
    if n == 0:
        return (0.0, 1.0)
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return (lo, hi)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, 8, ... up to ``n``, plus ``n`` itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    ks.append(n)
    return ks


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def summarize(rows: Sequence[dict], *, ks: Iterable[int] | None = None, bootstrap_resamples: int = 1000) -> dict:
    """Metrics over result rows (each with ``scores`` and ``answers`` lists of equal length ``n``)."""
    if not rows:
        return {"num_problems": 0}
    n = min(len(r["scores"]) for r in rows)
    if n == 0:
        raise ValueError("summarize: a result row has no samples.")
    correct = [[as_correct(s) for s in r["scores"][:n]] for r in rows]
    top1 = [c[0] for c in correct]
    k_list = sorted({k for k in (ks or default_ks(n)) if 1 <= k <= n})
    out: dict = {
        "num_problems": len(rows),
        "num_samples": n,
        "accuracy": _mean(top1),
        "accuracy_ci95": list(wilson_interval(sum(top1), len(top1))),
        "correct": int(sum(top1)),
        "unscorable_samples": sum(s is None for r in rows for s in r["scores"][:n]),
    }
    if n > 1:
        avg = [_mean(c) for c in correct]
        out["avg@n"] = _mean(avg)
        out["avg@n_ci95"] = list(bootstrap_interval(avg, resamples=bootstrap_resamples))
        out["pass@k"], out["pass@k_ci95"], out["maj@k"], out["maj@k_ci95"] = {}, {}, {}, {}
        for k in k_list:
            pk = [pass_at_k(n, int(sum(c)), k) for c in correct]
            mk = [maj_at_k(r["answers"][:n], r["scores"][:n], k) for r in rows]
            out["pass@k"][str(k)] = _mean(pk)
            out["pass@k_ci95"][str(k)] = list(bootstrap_interval(pk, resamples=bootstrap_resamples))
            out["maj@k"][str(k)] = _mean(mk)
            out["maj@k_ci95"][str(k)] = list(bootstrap_interval(mk, resamples=bootstrap_resamples))
    return out


def breakdown(rows: Sequence[dict], key: Callable[[dict], object]) -> dict[str, dict]:
    """Top-1 accuracy, count and Wilson interval per group (``key(row)``; ``None`` -> ``"unknown"``)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        g = key(r)
        groups["unknown" if g is None else str(g)].append(as_correct(r["scores"][0]))
    out = {}
    for g in sorted(groups, key=lambda s: (len(s), s) if s.isdigit() else (99, s)):
        xs = groups[g]
        out[g] = {"n": len(xs), "correct": int(sum(xs)), "accuracy": _mean(xs), "ci95": list(wilson_interval(sum(xs), len(xs)))}
    return out


def mode_summary(rows: Sequence[dict], *, ks: Iterable[int] | None = None) -> dict:
    """Point metrics of one scoring mode (rows with ``scores`` and ``answers``): top-1 accuracy with
    its Wilson interval, and for ``n > 1`` avg@n, pass@k and maj@k (no bootstrap: the headline
    mode's intervals are in the main summary)."""
    if not rows:
        return {"num_problems": 0}
    n = min(len(r["scores"]) for r in rows)
    correct = [[as_correct(s) for s in r["scores"][:n]] for r in rows]
    top1 = [c[0] for c in correct]
    out: dict = {"accuracy": _mean(top1), "accuracy_ci95": list(wilson_interval(sum(top1), len(top1))),
                 "correct": int(sum(top1)), "num_problems": len(rows),
                 "no_answer": sum(a is None for r in rows for a in r["answers"][:n])}
    if n > 1:
        k_list = sorted({k for k in (ks or default_ks(n)) if 1 <= k <= n})
        out["avg@n"] = _mean([_mean(c) for c in correct])
        out["pass@k"] = {str(k): _mean([pass_at_k(n, int(sum(c)), k) for c in correct]) for k in k_list}
        out["maj@k"] = {str(k): _mean([maj_at_k(r["answers"][:n], r["scores"][:n], k) for r in rows]) for k in k_list}
    return out
