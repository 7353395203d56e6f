"""The `code` verifier as a reward function inside a real ``trl.GRPOTrainer`` step (tiny model, CPU)."""

from __future__ import annotations

import os
import pickle

import pytest

from trl_grpo_plus.rewards import get_verifier

pytestmark = pytest.mark.slow


class Recorder:
    """Wraps the code verifier; records what TRL passed in and what came back."""

    __name__ = "code_recorded"

    def __init__(self):
        self.code = get_verifier("code", timeout_s=3)
        self.calls = []

    def __call__(self, prompts, completions, **columns):
        scores = self.code(prompts=prompts, completions=completions, **columns)
        self.calls.append((list(completions), columns.get("tests"), scores))
        return scores


def test_code_verifier_inside_a_grpo_training_step(tiny_model_dir, tmp_path):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    reward = Recorder()
    pickle.loads(pickle.dumps(reward.code))  # TRL / accelerate may copy reward functions
    data = Dataset.from_dict({
        "prompt": [f"Write f(x) returning x + {i} in a ```python block." for i in range(4)],
        "tests": [[f"assert f(1) == {1 + i}", f"assert f(2) == {2 + i}"] for i in range(4)],
    })
    cfg = GRPOConfig(
        output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], gradient_checkpointing=False,
        save_strategy="no", logging_steps=1, disable_tqdm=True, max_completion_length=12,
        num_generations=4, per_device_train_batch_size=4, max_steps=2, seed=0, learning_rate=1e-3,
    )
    trainer = GRPOTrainer(model=tiny_model_dir, reward_funcs=[reward], args=cfg, train_dataset=data)
    trainer.train()

    assert len(reward.calls) >= 2
    for completions, tests, scores in reward.calls:
        # TRL handed over the tests column row by row, and every completion got a real score
        assert isinstance(tests, list) and len(tests) == len(completions) and all(len(t) == 2 for t in tests)
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    stats = reward.code.stats
    assert stats["unscorable"] == 0 and stats["samples"] >= 8
    # the tiny model writes noise: it never defines f, so every run ended as an error or failed tests
    assert stats["status_error"] + stats["status_failed"] == stats["samples"]
    assert any("rewards/code_recorded" in k for row in trainer.state.log_history for k in row)
