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
    png = (out / "reward_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "tokenizer.json").is_file()
    for phase in ("eval_before", "eval_after"):
        rows = (out / phase / "results.jsonl").read_text().splitlines()
        assert len(rows) == 16 and len({json.loads(r)["id"] for r in rows}) == 16
        assert (out / phase / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert "first 10 steps" in printed and "before" in printed and "after" in printed


def test_window_means_and_reward_history():
    assert demo.window_means([0.0] * 10 + [1.0] * 10) == (0.0, 1.0)
    assert demo.window_means([0.2, 0.4, 0.6, 0.8], n=10) == pytest.approx((0.3, 0.7))  # halves when short
    logs = [{"loss": 1.0, "step": 1}, {"reward": 0.5, "step": 1}, {"train_runtime": 3.0, "step": 1}]
    assert demo.reward_history(logs) == [{"reward": 0.5, "step": 1}]
