"""Bad reward functions: raising or None/NaN → training continues, samples excluded and counted;
a wrong number of rewards → a clear error naming the function."""

from __future__ import annotations

import math

import pytest
import torch
from grpo_testlib import cpu_config, prompt_dataset

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer


def _trainer(model_dir, output_dir, reward_funcs, **overrides):
    args = cpu_config(GRPOPlusConfig, output_dir, **overrides)
    trainer = GRPOPlusTrainer(model=model_dir, reward_funcs=reward_funcs, args=args, train_dataset=prompt_dataset(16))
    batches = []
    original = trainer._plus_after_generation

    def record(batch, rewards_per_func):
        batches.append((rewards_per_func.clone(), original(batch, rewards_per_func)["advantages"].clone()))
        return batch

    trainer._plus_after_generation = record
    return trainer, batches


def _metric(trainer, name):
    return [log[name] for log in trainer.state.log_history if name in log]


class FlakyReward:
    """Raises on its first call, then scores every completion."""

    __name__ = "flaky"

    def __init__(self):
        self.calls = 0

    def __call__(self, prompts, completions, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("verifier crashed")
        return [float(len(c) % 3) for c in completions]


def test_raising_reward_function_does_not_stop_training(tiny_model_dir, tmp_path, caplog):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, FlakyReward())
    trainer.train()
    assert trainer.state.global_step == 2
    assert "'flaky' raised RuntimeError: verifier crashed" in caplog.text
    (rewards0, advantages0), (rewards1, _) = batches
    assert torch.isnan(rewards0).all() and torch.equal(advantages0, torch.zeros_like(advantages0))
    assert not torch.isnan(rewards1).any()
    assert _metric(trainer, "rewards/failed_samples") == [4.0, 0.0]
    assert _metric(trainer, "rewards/excluded_samples") == [4.0, 0.0]


class PartlyNoneReward:
    __name__ = "partly_none"

    def __call__(self, prompts, completions, **kwargs):
        table = [None, 1.0, float("nan"), 3.0, 2.0, 0.0, 1.0, None]
        return [table[i % len(table)] for i in range(len(prompts))]


def test_none_and_nan_rewards_are_excluded_counted_and_get_zero_advantage(tiny_model_dir, tmp_path):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, PartlyNoneReward(), per_device_train_batch_size=8)
    trainer.train()
    assert trainer.state.global_step == 2
    for rewards, advantages in batches:
        excluded = torch.isnan(rewards[:, 0])
        assert excluded.sum().item() == 3  # None, NaN, None
        assert torch.equal(advantages[excluded], torch.zeros(3, dtype=advantages.dtype))
        # group [None, 1, NaN, 3]: the two valid rewards are ±1/√2 / (σ + ε) apart from their mean 2
        sigma = math.sqrt(2.0)  # sample std of (1, 3)
        assert advantages[1].item() == pytest.approx(-1 / (sigma + 1e-4), rel=1e-6)
    assert _metric(trainer, "rewards/excluded_samples") == [3.0, 3.0]
    losses = _metric(trainer, "loss")
    assert all(math.isfinite(loss) for loss in losses)


def test_a_mix_of_functions_keeps_samples_any_function_scored(tiny_model_dir, tmp_path):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, [FlakyReward(), PartlyNoneReward()],
                                per_device_train_batch_size=8, max_steps=1)
    trainer.train()
    (rewards, _), = batches
    assert torch.isnan(rewards[:, 0]).all()  # flaky raised
    assert _metric(trainer, "rewards/excluded_samples") == [3.0]  # only rows no function scored


def bad_length(prompts, completions, **kwargs):
    return [1.0] * (len(prompts) - 1)


def not_a_list(prompts, completions, **kwargs):
    return 1.0


async def async_bad_length(prompts, completions, **kwargs):
    return [1.0]


@pytest.mark.parametrize(("func", "error", "match"), [
    (bad_length, ValueError, r"reward function 'bad_length' returned 3 rewards for 4 completions"),
    (not_a_list, TypeError, r"reward function 'not_a_list' returned a float"),
    (async_bad_length, ValueError, r"reward function 'async_bad_length' returned 1 rewards for 4 completions"),
], ids=["wrong_length", "not_a_list", "async_wrong_length"])
def test_wrong_shape_is_a_clear_error_naming_the_function(tiny_model_dir, tmp_path, func, error, match):
    trainer, _ = _trainer(tiny_model_dir, tmp_path, func)
    with pytest.raises(error, match=match):
        trainer.train()


class AlwaysRaises:
    __name__ = "always_raises"

    def __call__(self, prompts, completions, **kwargs):
        raise KeyError("answer")


def test_a_reward_function_that_always_fails_stops_training_after_the_window(tiny_model_dir, tmp_path):
    # one generation batch per step; the default window is 3 generation batches of every sample failing
    trainer, batches = _trainer(tiny_model_dir, tmp_path, AlwaysRaises(), max_steps=6)
    with pytest.raises(RuntimeError, match=r"reward function 'always_raises' failed on 12 of 12 samples over the "
                                           r"last 3 generation batches.*last error: KeyError: 'answer'.*fail closed"):
        trainer.train()
    assert len(batches) == 2 and trainer.state.global_step == 2  # the third batch raised before training on it


def test_the_window_and_fraction_are_configurable(tiny_model_dir, tmp_path):
    # FlakyReward fails on the first batch only: 4 of 8 samples over a window of 2 batches reaches f = 0.5
    trainer, _ = _trainer(tiny_model_dir, tmp_path / "half", FlakyReward(), reward_failure_window=2,
                          reward_failure_fraction=0.5)
    with pytest.raises(RuntimeError, match=r"'flaky' failed on 4 of 8 samples over the last 2"):
        trainer.train()
    trainer, _ = _trainer(tiny_model_dir, tmp_path / "tolerant", FlakyReward(), reward_failure_window=2,
                          reward_failure_fraction=0.6)
    trainer.train()  # 4/8 < 0.6: tolerated
    trainer, _ = _trainer(tiny_model_dir, tmp_path / "off", AlwaysRaises(), reward_failure_window=0, max_steps=4)
    trainer.train()  # check off: the old tolerance
    assert _metric(trainer, "rewards/failed_samples") == [4.0] * 4


def test_a_verifier_that_counts_its_errors_fails_closed_too(tiny_model_dir, tmp_path):
    from trl_grpo_plus.rewards import Verifier

    class Broken(Verifier):  # Verifier catches its own exceptions: None per sample, stats["errors"] += 1
        def score(self, completion, **row):
            return float(row["missing_column"])

    verifier = Broken(name="broken")
    trainer, _ = _trainer(tiny_model_dir, tmp_path, verifier, max_steps=6)
    with pytest.raises(RuntimeError, match=r"'broken' failed on 12 of 12 samples"):
        trainer.train()
    assert verifier.stats["errors"] == 12


class HalfNone:
    """Scores the first half of each group, None for the second half (a partial failure with another function)."""

    __name__ = "half_none"

    def __call__(self, prompts, completions, **kwargs):
        return [10.0 if i % 4 < 2 else None for i in range(len(prompts))]


class ByPosition:
    __name__ = "by_position"

    def __call__(self, prompts, completions, **kwargs):
        return [float(i % 4) for i in range(len(prompts))]


@pytest.mark.parametrize("mode", ["zero", "drop"])
def test_partial_reward_failure_zero_or_drop(tiny_model_dir, tmp_path, mode):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, [ByPosition(), HalfNone()], max_steps=1,
                                partial_reward_failure=mode)
    trainer.train()
    (_, advantages), = batches
    sigma = math.sqrt
    if mode == "zero":  # totals (0+10, 1+10, 2+0, 3+0) = (10, 11, 2, 3): mean 6.5, sample std sqrt(65/3)
        expected = [(r - 6.5) / (sigma(65 / 3) + 1e-4) for r in (10, 11, 2, 3)]
    else:  # the last two are dropped: (10, 11) → ±0.5 / (std 1/√2 + ε), the dropped get 0
        expected = [-0.5 / (sigma(0.5) + 1e-4), 0.5 / (sigma(0.5) + 1e-4), 0.0, 0.0]
    assert advantages.tolist() == pytest.approx(expected, rel=1e-6)
    assert _metric(trainer, "rewards/excluded_samples") == [0.0 if mode == "zero" else 2.0]
