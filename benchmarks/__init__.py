"""DeepSeekMath-style benchmark harnesses (installed as ``trl_grpo_plus.benchmarks``).

``evaluate(benchmark, model=..., tokenizer=..., ...) -> summary dict`` runs GSM8K / MATH / MATH-500
with the ``hf`` or ``vllm`` backend and scores with the same verifiers the trainer rewards with.
The CLI is ``trl-grpo-plus eval``; see docs/evaluation.md.
"""

from .datasets import BENCHMARKS, BenchmarkDataError, Example, load_examples
from .runner import evaluate, rescore

__all__ = ["BENCHMARKS", "BenchmarkDataError", "Example", "evaluate", "load_examples", "rescore"]
