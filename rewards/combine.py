"""``combine(verifiers, weights, gate=...)``: one TRL reward function out of several verifiers.

``reward = gate_ok * sum_i w_i * s_i`` over the components whose score ``s_i`` is not None.

* ``verifiers``: verifier instances or registry names (``"math"`` -> ``get_verifier("math")``).
* ``weights``: one float per verifier (default 1.0 each).
* ``gate``: an optional verifier (or name) that must pass for the rest to count, e.g.
  ``combine(["math"], gate="format")`` = "correctness counts only if the format passes". The gate
  passes when its score is >= ``gate_threshold`` (default 1.0); a None gate score fails.
  A failed gate gives 0.0. Every component still scores the whole batch, so its stats count
  every sample.
* A component's None is skipped (its weight does not count); when every component is None the
  combined score is None (unscorable, counted).

Each component keeps its own ``stats``; ``Combined.component_stats()`` returns them by name, and the
combined ``stats`` counts ``gated`` samples.
"""

from __future__ import annotations

from .base import Verifier
from .registry import get_verifier

__all__ = ["Combined", "combine"]


def _resolve(v):
    return get_verifier(v) if isinstance(v, str) else v


class Combined(Verifier):
    """A weighted, optionally gated sum of verifiers (see the module docstring). Picklable."""

    def __init__(self, verifiers, weights=None, *, gate=None, gate_threshold: float = 1.0,
                 name: str | None = None):
        verifiers = [_resolve(v) for v in verifiers]
        gate = _resolve(gate) if gate is not None else None
        if not verifiers:
            raise ValueError("combine() needs at least one verifier.")
        for v in verifiers + ([gate] if gate is not None else []):
            if not callable(v):
                raise TypeError(f"combine(): {v!r} is not a reward function.")
        weights = [1.0] * len(verifiers) if weights is None else [float(w) for w in weights]
        if len(weights) != len(verifiers):
            raise ValueError(f"combine(): {len(weights)} weights for {len(verifiers)} verifiers.")
        self.verifiers = verifiers
        self.weights = weights
        self.gate = gate
        self.gate_threshold = float(gate_threshold)
        if name is None:
            name = "+".join(_name(v) for v in verifiers)
            if self.gate is not None:
                name = f"{name}|gate={_name(self.gate)}"
        super().__init__(name=name)

    def score_batch(self, prompts, completions, columns) -> list[float | None]:
        n = len(completions)
        parts = [_call(v, prompts, completions, columns, n) for v in self.verifiers]
        gate = _call(self.gate, prompts, completions, columns, n) if self.gate is not None else None
        out: list[float | None] = []
        for i in range(n):
            scored = [(w, p[i]) for w, p in zip(self.weights, parts) if p[i] is not None]
            if not scored:
                out.append(None)
                continue
            if gate is not None and (gate[i] is None or gate[i] < self.gate_threshold):
                self.stats["gated"] += 1
                out.append(0.0)
                continue
            out.append(float(sum(w * s for w, s in scored)))
        return out

    def component_stats(self) -> dict:
        comps = list(self.verifiers) + ([self.gate] if self.gate is not None else [])
        return {_name(v): dict(getattr(v, "stats", {})) for v in comps}


def _name(v) -> str:
    return getattr(v, "__name__", type(v).__name__)


def _call(v, prompts, completions, columns, n) -> list:
    try:
        scores = list(v(prompts=prompts, completions=completions, **columns))
    except Exception:  # a third-party component must not take the whole reward down
        return [None] * n
    return scores if len(scores) == n else [None] * n


def combine(verifiers, weights=None, gate=None, *, gate_threshold: float = 1.0, name: str | None = None):
    """Compose verifiers into one reward function: ``gate_ok * sum(w_i * s_i)``."""
    return Combined(verifiers, weights, gate=gate, gate_threshold=gate_threshold, name=name)
