"""Published accuracies, and the row a run can be compared with.

``match_published(model, benchmark, preset)`` returns the published rows whose model pattern occurs
in the model path (case-insensitive, ``_`` = ``-``) and whose benchmark matches; each says whether
its protocol (preset) is the run's. ``report.md`` prints the comparison, and says plainly when the
protocol differs. MATH figures are on the full 5,000-problem test set, not MATH-500.

| model | benchmark | % | preset | source |
|---|---|---:|---|---|
| DeepSeekMath-Base 7B | GSM8K | 64.2 | deepseek-fewshot (8-shot) | DeepSeekMath paper (arXiv 2402.03300), Table 2 |
| DeepSeekMath-Base 7B | MATH | 36.2 | deepseek-fewshot (4-shot) | same, Table 2 |
| DeepSeekMath-Instruct 7B | GSM8K | 82.9 | deepseek-chat (zero-shot CoT) | same, Table 5 |
| DeepSeekMath-Instruct 7B | MATH | 46.8 | deepseek-chat | same, Table 5 |
| DeepSeekMath-RL 7B | GSM8K | 88.2 | deepseek-chat | same, Table 5 |
| DeepSeekMath-RL 7B | MATH | 51.7 | deepseek-chat | same, Table 5 |
| Qwen2.5-Math-7B-Instruct | MATH | 83.6 | qwen2.5-math (CoT) | Qwen2.5-Math report (arXiv 2409.12122), abstract |
| SmolLM2-135M-Instruct | GSM8K | 1.4 | none here (5-shot, lighteval) | SmolLM2-135M-Instruct model card |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PublishedResult:
    model: str  # display name
    pattern: str  # matched against the model path
    benchmark: str  # gsm8k | math
    accuracy: float  # percent
    presets: tuple[str, ...]  # the presets that reproduce its protocol; () = none here
    protocol: str
    source: str


_PAPER = "DeepSeekMath paper (arXiv 2402.03300)"
PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("DeepSeekMath-Base 7B", "deepseek-math-7b-base", "gsm8k", 64.2, ("deepseek-fewshot",),
                    "8-shot CoT, greedy", _PAPER + ", Table 2"),
    PublishedResult("DeepSeekMath-Base 7B", "deepseek-math-7b-base", "math", 36.2, ("deepseek-fewshot",),
                    "4-shot Minerva CoT, greedy", _PAPER + ", Table 2"),
    PublishedResult("DeepSeekMath-Instruct 7B", "deepseek-math-7b-instruct", "gsm8k", 82.9, ("deepseek-chat", "deepseek-math"),
                    "zero-shot CoT, greedy", _PAPER + ", Table 5"),
    PublishedResult("DeepSeekMath-Instruct 7B", "deepseek-math-7b-instruct", "math", 46.8, ("deepseek-chat", "deepseek-math"),
                    "zero-shot CoT, greedy", _PAPER + ", Table 5"),
    PublishedResult("DeepSeekMath-RL 7B", "deepseek-math-7b-rl", "gsm8k", 88.2, ("deepseek-chat", "deepseek-math"),
                    "zero-shot CoT, greedy", _PAPER + ", Table 5"),
    PublishedResult("DeepSeekMath-RL 7B", "deepseek-math-7b-rl", "math", 51.7, ("deepseek-chat", "deepseek-math"),
                    "zero-shot CoT, greedy", _PAPER + ", Table 5"),
    PublishedResult("Qwen2.5-Math-7B-Instruct", "qwen2.5-math-7b-instruct", "math", 83.6, ("qwen2.5-math",),
                    "zero-shot CoT", "Qwen2.5-Math report (arXiv 2409.12122), abstract"),
    PublishedResult("SmolLM2-135M-Instruct", "smollm2-135m-instruct", "gsm8k", 1.4, (),
                    "5-shot (lighteval); no preset here reproduces it", "SmolLM2-135M-Instruct model card"),
)


def _norm(s: str) -> str:
    return s.lower().replace("_", "-")


def match_published(model: str | None, benchmark: str, preset: str | None) -> list[dict]:
    """Published rows for this model and benchmark (``math500`` matches none: MATH figures are on
    the full test set), each with ``same_protocol``."""
    if not model:
        return []
    name = _norm(str(model))
    out = []
    for row in PUBLISHED:
        if row.benchmark == benchmark and _norm(row.pattern) in name:
            out.append(dict(asdict(row), presets=list(row.presets), same_protocol=preset in row.presets))
    return out
