"""DeepSeekMath-protocol benchmark harnesses (installed as ``trl_grpo_plus.benchmarks``).

``evaluate(benchmark, model=..., tokenizer=..., prompt=<preset>, ...) -> summary dict`` runs GSM8K /
MATH / MATH-500 with the ``hf`` or ``vllm`` backend and scores with the same verifiers the trainer
rewards with, in the ``strict``, ``flexible`` and ``deepseek`` modes side by side. Presets:
``list_presets()``, ``register_preset(Preset(...))``. The CLI is ``trl-grpo-plus eval``; see
docs/evaluation.md.
"""

from .datasets import BENCHMARKS, BenchmarkDataError, Example, load_examples
from .presets import Layout, Preset, get_preset, list_presets, register_preset
from .runner import evaluate, rescore

__all__ = ["BENCHMARKS", "BenchmarkDataError", "Example", "Layout", "Preset", "evaluate", "get_preset", "list_presets",
           "load_examples", "register_preset", "rescore"]
