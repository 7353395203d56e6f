"""Scoring through ``trl_grpo_plus.rewards``, the same verifier code the trainer rewards with.

* GSM8K -> ``get_verifier("gsm8k")``; MATH / MATH-500 -> ``get_verifier("math")``.
* The verifier is called exactly as TRL calls a reward function:
  ``verifier(prompts, completions, answer=[gold] * n) -> list[float | None]``.
* ``verifier_options`` go to ``get_verifier(name, **options)``; e.g. ``fallback_last_number=False``
  makes both verifiers read only an explicit final answer (``\\boxed{}``, "The answer is",
  "final answer is", ``####``), not the last number of a truncated or rambling completion.
* The answer shown in ``results.jsonl`` and used for maj@k votes comes from the verifier module's
  ``extract_answer(text)`` (``trl_grpo_plus.rewards.gsm8k`` when it has one, else
  ``trl_grpo_plus.rewards.math``).
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable, Sequence

from .datasets import Example, get_spec


class Scorer:
    """Scores the ``n`` completions of one problem; ``verifier=`` overrides the registry lookup
    (any TRL reward function taking ``answer=``), ``extract=`` the answer extractor."""

    def __init__(self, benchmark: str, *, verifier: Callable | None = None, extract: Callable[[str], str | None] | None = None,
                 verifier_options: dict | None = None):
        spec = get_spec(benchmark)
        self.verifier_name = spec.verifier
        options = dict(verifier_options or {})
        if verifier is None:
            from trl_grpo_plus.rewards import get_verifier

            verifier = get_verifier(spec.verifier, **options)
        self.verifier = verifier
        if extract is None:
            extract = _extractor(spec.verifier)
            if "fallback_last_number" in options:  # the shown / voted answer follows the same rule
                extract = functools.partial(extract, fallback_last_number=options["fallback_last_number"])
        self.extract = extract

    def score(self, example: Example, prompt: str, texts: Sequence[str]) -> tuple[list[float | None], list[str | None]]:
        n = len(texts)
        scores = list(self.verifier(prompts=[prompt] * n, completions=list(texts), answer=[example.gold] * n))
        if len(scores) != n:
            raise RuntimeError(f"verifier {self.verifier_name!r} returned {len(scores)} scores for {n} completions")
        answers = []
        for t in texts:
            try:
                answers.append(self.extract(t))
            except Exception:  # an extractor must not stop an evaluation; the score is what counts
                answers.append(None)
        return scores, answers


def _extractor(verifier_name: str) -> Callable[[str], str | None]:
    for module in (f"trl_grpo_plus.rewards.{verifier_name}", "trl_grpo_plus.rewards.math"):
        try:
            fn = getattr(importlib.import_module(module), "extract_answer", None)
        except ImportError:
            continue
        if callable(fn):
            return fn
    raise ImportError(
        f"No extract_answer in trl_grpo_plus.rewards.{verifier_name} or trl_grpo_plus.rewards.math; "
        "the verifiers are not installed."
    )
