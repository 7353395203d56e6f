"""μ epochs over one generation batch: forward passes per generation batch, and mini-batch order per epoch."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from grpo_testlib import LengthReward, cpu_config, prompt_dataset

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer

MU, STEPS_PER_GENERATION = 2, 2


def _trainer(model_dir, output_dir, **overrides):
    values = dict(num_iterations=MU, gradient_accumulation_steps=STEPS_PER_GENERATION, max_steps=4, beta=0.04)
    values.update(overrides)
    args = cpu_config(GRPOPlusConfig, output_dir, **values)
    return GRPOPlusTrainer(model=model_dir, reward_funcs=LengthReward(), args=args, train_dataset=prompt_dataset(16))


def _spy_forward_passes(trainer):
    """Record every log-prob forward pass as 'old' (policy, no grad), 'ref' or 'train' (policy, with grad)."""
    calls = []
    original = trainer._get_per_token_logps_and_entropies

    def spy(model, *args, **kwargs):
        kind = "ref" if model is trainer.ref_model else "train" if torch.is_grad_enabled() else "old"
        calls.append(kind)
        return original(model, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = spy
    return calls


@pytest.mark.parametrize("beta", [0.04, 0.0])
def test_forward_passes_per_generation_batch(tiny_model_dir, tmp_path, beta):
    # 4 optimizer steps × 2 accumulation micro-steps = 8 micro-steps; a generation batch feeds
    # steps_per_generation × μ = 4 of them, so there are 2 generation batches.
    trainer = _trainer(tiny_model_dir, tmp_path, beta=beta)
    calls = _spy_forward_passes(trainer)
    trainer.train()
    generation_batches = 8 // (STEPS_PER_GENERATION * MU)
    expected = {
        "old": generation_batches,  # π_old once per generation batch, whatever μ
        "train": generation_batches * STEPS_PER_GENERATION * MU,  # one per mini-batch per epoch
    }
    if beta:
        expected["ref"] = generation_batches  # π_ref once per generation batch, only when β > 0
    assert Counter(calls) == Counter(expected)
    # order within a generation batch: old and ref first, then the μ·S training passes
    per_batch = len(calls) // generation_batches
    assert calls[:per_batch].count("train") == STEPS_PER_GENERATION * MU
    assert calls[0] == "old"


def _minibatches(tiny_model_dir, tmp_path, shuffle):
    trainer = _trainer(tiny_model_dir, tmp_path, shuffle_each_iteration=shuffle, max_steps=2)
    seen = []
    original = trainer.per_token_logps

    def record(model, inputs, *args, **kwargs):
        if torch.is_grad_enabled():  # training passes only
            seen.append([tuple(row) for row in inputs["completion_ids"].tolist()])
        return original(model, inputs, *args, **kwargs)

    trainer.per_token_logps = record
    trainer.train()
    assert len(seen) == STEPS_PER_GENERATION * MU  # one generation batch
    return seen[:STEPS_PER_GENERATION], seen[STEPS_PER_GENERATION:]


def test_without_shuffle_each_epoch_replays_the_same_minibatches(tiny_model_dir, tmp_path):
    first, second = _minibatches(tiny_model_dir, tmp_path, shuffle=False)
    assert first == second  # TRL: shuffled once per generation batch


def test_shuffle_each_iteration_redraws_minibatches_every_epoch(tiny_model_dir, tmp_path):
    first, second = _minibatches(tiny_model_dir, tmp_path, shuffle=True)
    flatten = lambda epoch: Counter(row for batch in epoch for row in batch)  # noqa: E731
    assert flatten(first) == flatten(second)  # every sample exactly once per epoch
    assert len(flatten(first)) == 8  # distinct completions, so the order is observable
    partition = lambda epoch: {frozenset(batch) for batch in epoch}  # noqa: E731
    assert partition(first) != partition(second)  # a different split into mini-batches


@pytest.mark.parametrize(("accumulation", "steps_per_generation"), [(1, 2), (2, 1)])
def test_steps_per_generation_differs_from_gradient_accumulation(tiny_model_dir, tmp_path, accumulation,
                                                                 steps_per_generation):
    # 4 optimizer steps of `accumulation` micro-steps; a generation batch feeds `steps_per_generation` of them (μ = 1).
    # GA1-spg2: 2 optimizer steps per generation batch, so the second one is off-policy and needs π_old;
    # GA2-spg1: 2 generation batches per optimizer step, each on-policy (π_old = π_θ.detach(), no extra pass).
    trainer = _trainer(tiny_model_dir, tmp_path, num_iterations=1, gradient_accumulation_steps=accumulation,
                       steps_per_generation=steps_per_generation, beta=0.0)
    calls = _spy_forward_passes(trainer)
    trainer.train()
    micro_steps = 4 * accumulation
    generation_batches = micro_steps // steps_per_generation
    expected = {"train": micro_steps}
    if accumulation % steps_per_generation:
        expected["old"] = generation_batches
    assert Counter(calls) == Counter(expected)
    assert trainer.state.global_step == 4
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)
