"""Scoring: three modes side by side, through the code the trainer rewards with.

* ``strict`` (the headline by default): ``get_verifier("gsm8k" | "math", mode="strict")``, the
  training reward's default. Only an explicit final answer counts (``\\boxed{}``, "The answer is",
  "final answer is", ``####``, a completion that is nothing but an answer); no number is guessed out
  of prose. Where a completion holds several "The answer is", the **last** one counts (lm-eval's
  ``strict-match`` takes the first; the last is what a model that corrects itself means).
* ``flexible``: the same verifier with ``mode="flexible"``: when no explicit answer is found, the
  last number standing alone in the prose (lm-eval's ``flexible-extract`` idea).
* ``deepseek``: DeepSeekMath's own rules (``deepseek_scoring.py``: 1e-3 absolute tolerance, percent
  rescaling, list answers).

The verifier is called exactly as TRL calls a reward function:
``verifier(prompts, completions, answer=[gold] * n) -> list[float | None]``. The answer shown in
``results.jsonl`` (and voted on for maj@k) is the mode's own extraction: ``extract_answer(text,
mode=...)`` of ``trl_grpo_plus.rewards.gsm8k`` (GSM8K) or ``trl_grpo_plus.rewards.math``.

``verifier=`` (any TRL reward function taking ``answer=``) adds a ``custom`` mode and makes it the
headline. ``verifier_options`` go to every registry verifier (e.g. ``timeout_s``).
"""

from __future__ import annotations

import functools
import importlib
from typing import Callable, Sequence

from .datasets import BenchmarkDataError, Example, get_spec
from .deepseek_scoring import DeepSeekScorer

MODES = ("strict", "flexible", "deepseek")


def registry_verifier(name: str, mode: str, options: dict | None = None):
    """``get_verifier(name, mode=mode, **options)``; with a verifier that predates ``mode=``,
    its ``fallback_last_number`` (flexible = True) instead."""
    from trl_grpo_plus.rewards import get_verifier

    options = dict(options or {})
    try:
        return get_verifier(name, mode=mode, **options)
    except TypeError:
        return get_verifier(name, fallback_last_number=(mode == "flexible"), **options)


def mode_extractor(verifier_name: str, mode: str) -> Callable[[str], str | None]:
    """``extract_answer`` of the verifier's module, bound to ``mode``."""
    fn = None
    for module in (f"trl_grpo_plus.rewards.{verifier_name}", "trl_grpo_plus.rewards.math"):
        try:
            fn = getattr(importlib.import_module(module), "extract_answer", None)
        except ImportError:
            continue
        if callable(fn):
            break
    if not callable(fn):
        raise ImportError(f"No extract_answer in trl_grpo_plus.rewards.{verifier_name}; the verifiers are not installed.")
    try:
        fn("", mode=mode)
        return functools.partial(fn, mode=mode)
    except TypeError:
        return functools.partial(fn, fallback_last_number=(mode == "flexible"))


def _safe(extract: Callable[[str], str | None], text: str) -> str | None:
    try:
        return extract(text)
    except Exception:  # an extractor must not stop an evaluation; the score is what counts
        return None


class Scorer:
    """Scores the ``n`` completions of one problem in every mode.

    ``score(example, prompt, texts) -> {mode: (scores, answers)}``; ``headline`` names the mode
    whose scores are the run's ``accuracy``."""

    def __init__(self, benchmark: str, *, fewshot: bool = False, headline: str = "strict",
                 verifier: Callable | None = None, verifier_options: dict | None = None):
        spec = get_spec(benchmark)
        clash = sorted(set(verifier_options or {}) & {"mode", "fallback_last_number"})
        if clash:
            raise BenchmarkDataError(
                f"verifier_options={verifier_options!r} sets {', '.join(clash)}, but every scoring mode is computed "
                "side by side; drop it and pick the reported one with headline='strict' | 'flexible' | 'deepseek'."
            )
        self.benchmark = benchmark
        self.verifier_name = spec.verifier
        self.verifiers = {m: registry_verifier(spec.verifier, m, verifier_options) for m in ("strict", "flexible")}
        self.extractors = {m: mode_extractor(spec.verifier, m) for m in ("strict", "flexible")}
        self.deepseek = DeepSeekScorer(benchmark, fewshot=fewshot)
        self.modes = list(MODES)
        if verifier is not None:
            self.verifiers["custom"] = verifier
            self.extractors["custom"] = self.extractors["strict"]
            self.modes.append("custom")
            headline = "custom"
        if headline not in self.modes:
            raise BenchmarkDataError(f"headline={headline!r} is not a scoring mode; choose one of {', '.join(self.modes)}.")
        self.headline = headline

    def score(self, example: Example, prompt: str, texts: Sequence[str]) -> dict[str, tuple[list, list]]:
        n = len(texts)
        out: dict[str, tuple[list, list]] = {}
        for mode in self.modes:
            if mode == "deepseek":
                pairs = [self.deepseek.score(t, example.gold, example.question) for t in texts]
                out[mode] = ([p[0] for p in pairs], [p[1] for p in pairs])
                continue
            scores = list(self.verifiers[mode](prompts=[prompt] * n, completions=list(texts), answer=[example.gold] * n))
            if len(scores) != n:
                raise RuntimeError(f"verifier {self.verifier_name!r} ({mode}) returned {len(scores)} scores for {n} completions")
            out[mode] = (scores, [_safe(self.extractors[mode], t) for t in texts])
        return out
