"""The README's main job, in its reduced CI mode: artefacts exist and the reward curve is recorded."""

import json
import math

import pytest

from trl_grpo_plus import demo


def test_demo_quick_writes_every_artefact(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--quick", "--output", str(out)]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["steps"] == 4
    curve = summary["reward_curve"]
    assert [p["step"] for p in curve] == [1, 2, 3, 4]
    # reward = 1.0·math + 0.2·format, so each logged mean lies in [0, 1.2]
    assert all(0.0 <= p["reward"] <= 1.2 and math.isfinite(p["reward"]) for p in curve)
    for key in ("heldout_accuracy_before", "heldout_accuracy_after"):
        assert 0.0 <= summary[key] <= 1.0
    # the shipped model starts part-way: it solves some held-out additions greedily, not all
    assert 0.0 < summary["heldout_accuracy_before"] < 1.0
    for name in ("reward_curve.png", "before_after.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    for phase in ("eval_before", "eval_after"):
        rows = (out / phase / "results.jsonl").read_text().splitlines()
        assert len(rows) == 16 and len({json.loads(r)["id"] for r in rows}) == 16
        assert (out / phase / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert "first 10 steps" in printed and "before" in printed and "after" in printed
    # one compact progress line per step instead of transformers' raw metrics dict
    assert sum(line.startswith("step ") and "/4 | reward " in line for line in printed.splitlines()) == 4
    assert "{'loss'" not in printed


def test_stated_parameter_count_matches_the_shipped_model():
    """demo --help and docs/training.md state the shipped model's size; it must be the model's real count."""
    import pathlib
    import re

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(demo.shipped_model_dir())
    actual = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
    docs = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    for where, text in (("demo --help", demo.__doc__), ("docs/training.md", docs)):
        stated = re.findall(r"~(\d+\.\d+M)[- ]parameter", text)
        assert stated and set(stated) == {actual}, (where, stated, actual)


def test_before_after_plot_draws_zero_and_shares_one_axis(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda ax, x, h, *a, **k: drawn.append((id(ax), x, h)) or real_bar(ax, x, h, *a, **k))
    before = {"accuracy": 0.0, "accuracy_ci95": [0.0, 0.161], "num_problems": 20, "correct": 0}
    after = {"accuracy": 0.45, "accuracy_ci95": [0.258, 0.658], "num_problems": 20, "correct": 9}
    demo.plot_before_after(before, after, tmp_path / "ba.png", title="t")
    assert (tmp_path / "ba.png").read_bytes()[:4] == b"\x89PNG"
    # both bars on the same axes (one y-axis), in percent, the 0% one included
    assert len({ax for ax, _, _ in drawn}) == 1 and [(x, h) for _, x, h in drawn] == [(0, 0.0), (1, 45.0)]


def test_window_means_and_reward_history():
    assert demo.window_means([0.0] * 10 + [1.0] * 10) == (0.0, 1.0)
    assert demo.window_means([0.2, 0.4, 0.6, 0.8], n=10) == pytest.approx((0.3, 0.7))  # halves when short
    logs = [{"loss": 1.0, "step": 1}, {"reward": 0.5, "step": 1}, {"train_runtime": 3.0, "step": 1}]
    assert demo.reward_history(logs) == [{"reward": 0.5, "step": 1}]
