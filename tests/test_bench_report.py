"""report.md: modes side by side and the published-numbers comparison; plot titles and groups."""

import pytest

from trl_grpo_plus.benchmarks.published import match_published
from trl_grpo_plus.benchmarks.report import _known_groups, plot, plot_title, render_report
from trl_grpo_plus.benchmarks.runner import build_summary


def rows(n_correct, n, modes=("strict", "flexible", "deepseek")):
    out = []
    for i in range(n):
        ok = 1.0 if i < n_correct else 0.0
        out.append({"id": str(i), "gold": "1", "scores": [ok], "answers": ["1" if ok else None],
                    "modes": {m: {"scores": [ok if m == "strict" else 1.0], "answers": ["1"]} for m in modes},
                    "num_tokens": [5], "finish_reasons": ["stop"]})
    return out


def config(model, prompt):
    return {"model": model, "prompt": prompt, "backend": "hf", "dtype": "auto", "verifier": "gsm8k", "num_fewshot": 0,
            "temperature": 0.0, "max_new_tokens": 1024, "seed": 0, "headline": "strict"}


def test_published_comparison_when_model_and_preset_match():
    s = build_summary("gsm8k", rows(3, 4), config("/models/deepseek-math-7b-rl", "deepseek-chat"))
    text = render_report(s)
    # strict 3/4 = 75.0 against the paper's 88.2: -13.2 points
    assert "| DeepSeekMath-RL 7B | 88.2 | zero-shot CoT, greedy (same preset) | 75.0 | -13.2 |" in text
    assert "| strict (headline) |" in text and "| flexible |" in text and "| deepseek |" in text
    assert "| 4/4 | 100.0 |" in text  # flexible and deepseek: every row right
    other = render_report(build_summary("gsm8k", rows(3, 4), config("deepseek-ai/deepseek-math-7b-rl", "chat")))
    assert "not comparable" in other and "the paper's protocol is deepseek-chat, deepseek-math" in other
    assert match_published("deepseek-ai/deepseek-math-7b-base", "math", "deepseek-fewshot")[0]["accuracy"] == 36.2
    assert match_published("deepseek-ai/deepseek-math-7b-base", "math500", "deepseek-fewshot") == []  # full MATH only
    assert match_published("my/llama", "gsm8k", "chat") == []
    assert "Published numbers" not in render_report(build_summary("gsm8k", rows(1, 2), config("my/llama", "chat")))


def test_plot_title_and_groups(tmp_path):
    s = build_summary("math500", [dict(r, subject="Algebra") for r in rows(1, 3)],
                      config("/x/SmolLM2-135M-Instruct", "lm-eval-minerva"))
    assert plot_title(s) == "SmolLM2-135M-Instruct | math500 | lm-eval-minerva"
    assert list(s["by_level"]) == ["unknown"] and _known_groups(s["by_level"]) == {}
    assert plot(s, [], str(tmp_path / "p.png")) and (tmp_path / "p.png").stat().st_size > 10_000
