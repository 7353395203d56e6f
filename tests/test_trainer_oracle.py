"""The trainer's loss AND parameter gradients equal an independent float64 loop of the DeepSeekMath objective.

Fixed batch: 3 prompts × G=4 completions of lengths 1..8 (tests/grpo_testlib.py), rewards with a spread group, a
zero-variance group and a None. μ = 2 so that the old log-probs are taken at generation time; the policy is then
perturbed (as if by an optimizer step) so that ρ ≠ 1, the clip binds for some tokens and the KL is non-zero.
Every std estimator × loss_type (aggregation) × KL estimator combination is checked to 1e-6. The model, the
advantages and the loss are float64; TRL's fused log-prob kernel accumulates its softmax in float32, which bounds
the agreement at ~1e-7 (observed ≤ 1e-7 on loss and gradients).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from grpo_testlib import COMPLETION_IDS, MAX_LEN, PROMPT_IDS, REWARDS, fixed_batch_trainer, oracle_advantages
from grpo_testlib import completion_rows, float64_copy, oracle_loss

EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.04


@pytest.fixture(scope="module")
def f64_models(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    return tokenizer, initial


def _trainer_loss_and_grads(f64_models, tmp_path, ref_perturb=None, **cfg):
    tokenizer, initial = f64_models
    trainer, inputs = fixed_batch_trainer(initial.config._name_or_path, tmp_path, dtype=torch.float64,
                                          epsilon=EPS_LOW, epsilon_high=EPS_HIGH, beta=BETA, ref_perturb=ref_perturb,
                                          **cfg)
    assert "old_per_token_logps" in inputs and "ref_per_token_logps" in inputs
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return trainer, inputs, loss.detach(), grads


def _oracle_loss_and_grads(f64_models, trainer, *, std, scope, eps, loss_type, kl_estimator, kl_clamp=None,
                           kl_times_ratio=False, rows=None, ref=None):
    _, initial = f64_models
    policy = float64_copy(f64_models[1], trainer.model)
    rows = list(range(12)) if rows is None else rows
    advantages = oracle_advantages(REWARDS, 4, std, scope, eps)
    loss, clipped = oracle_loss(policy, initial, ref or initial, [PROMPT_IDS[i // 4] for i in rows],
                                [COMPLETION_IDS[i] for i in rows], [advantages[i] for i in rows],
                                loss_type=loss_type, beta=BETA, kl_estimator=kl_estimator, eps_low=EPS_LOW,
                                eps_high=EPS_HIGH, max_len=MAX_LEN, kl_clamp=kl_clamp, kl_times_ratio=kl_times_ratio)
    return loss, policy, clipped


def _check(f64_models, tmp_path, *, std, loss_type, kl_estimator, kl_clamp=None, scale_rewards="group",
           kl_times_ratio=False, ref_perturb=None, accumulation=1, steps_per_generation=1):
    cfg = dict(loss_type=loss_type, kl_estimator=kl_estimator, kl_clamp=kl_clamp, scale_rewards=scale_rewards,
               use_bias_correction_kl=kl_times_ratio, gradient_accumulation_steps=accumulation,
               steps_per_generation=steps_per_generation, per_device_train_batch_size=12 // steps_per_generation)
    if std != "none":
        cfg["std_estimator"] = std
    else:
        cfg["scale_rewards"] = "none"
    trainer, inputs, loss, grads = _trainer_loss_and_grads(f64_models, tmp_path, ref_perturb=ref_perturb, **cfg)
    scope = "batch" if scale_rewards == "batch" else "group"
    rows = completion_rows(inputs)
    ref = float64_copy(f64_models[1], trainer.ref_model) if ref_perturb is not None else None
    expected, policy, clipped = _oracle_loss_and_grads(
        f64_models, trainer, std=std, scope=scope, eps=1e-4, loss_type=loss_type, kl_estimator=kl_estimator,
        kl_clamp=kl_clamp, kl_times_ratio=kl_times_ratio, rows=rows, ref=ref)
    # One micro-step of an optimizer step over `accumulation` micro-batches of a generation batch split in
    # `steps_per_generation`. TRL's scaling: dapo divides the micro-batch's token sum by the tokens of the whole
    # generation batch (all processes) × accumulation / steps_per_generation (≈ the tokens of one optimizer step);
    # every other loss_type divides its micro-batch loss by `accumulation`.
    if loss_type == "dapo":
        micro_tokens = sum(len(COMPLETION_IDS[i]) for i in rows)
        all_tokens = sum(len(c) for c in COMPLETION_IDS)
        expected = expected * micro_tokens / (all_tokens * accumulation / steps_per_generation)
    else:
        expected = expected / accumulation
    expected.backward()
    expected_grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    if len(rows) == 12:  # a micro-batch of 3 completions may not reach the clip; the whole batch must
        assert clipped > 0, "the perturbation must make the clip bind somewhere, or the test proves less"
    assert loss.dtype == torch.float64
    assert abs(loss.item() - expected.item()) <= 1e-6, (loss.item(), expected.item())
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=0, atol=1e-6, msg=name)
    return trainer


@pytest.mark.parametrize(
    ("std", "loss_type", "kl_estimator"),
    list(itertools.product(["sample", "population", "none"], ["grpo", "bnpo", "dapo", "dr_grpo"], ["k1", "k2", "k3"])),
)
def test_loss_and_gradients_match_float64_oracle(f64_models, tmp_path, std, loss_type, kl_estimator):
    _check(f64_models, tmp_path, std=std, loss_type=loss_type, kl_estimator=kl_estimator)


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_kl_clamp_and_batch_scope_match_oracle(f64_models, tmp_path, kl_estimator):
    _check(f64_models, tmp_path, std="population", loss_type="grpo", kl_estimator=kl_estimator, kl_clamp=0.05,
           scale_rewards="batch")


@pytest.mark.parametrize("kl_estimator", ["k1", "k2", "k3"])
def test_ratio_weighted_kl_matches_oracle(f64_models, tmp_path, kl_estimator):
    # TRL's default use_bias_correction_kl=True weights the KL by ρ (DeepSeek-V3.2); DeepSeekMath does not.
    _check(f64_models, tmp_path, std="sample", loss_type="dapo", kl_estimator=kl_estimator, kl_times_ratio=True)


@pytest.mark.parametrize("kl_estimator", ["k1", "k3"])
def test_kl_is_taken_against_the_reference_not_the_old_policy(f64_models, tmp_path, kl_estimator):
    # π_old (the initial model, μ = 2), π_ref (the initial model perturbed with another seed) and π_θ are three
    # different policies here; with π_ref = π_old a KL against the old log-probs would pass unnoticed.
    trainer = _check(f64_models, tmp_path, std="sample", loss_type="grpo", kl_estimator=kl_estimator, ref_perturb=0.5)
    assert trainer.ref_model is not None


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize(("accumulation", "steps_per_generation"), [(1, 2), (2, 4), (3, 1)],
                         ids=["GA1-spg2", "GA2-spg4", "GA3-spg1"])
def test_steps_per_generation_differs_from_gradient_accumulation(f64_models, tmp_path, loss_type, accumulation,
                                                                 steps_per_generation):
    # GA1-spg2: two optimizer steps per generation batch, each on half of it; GA2-spg4: the same with two micro-steps
    # per optimizer step; GA3-spg1: one micro-batch feeds an optimizer step of three (other generation batches).
    _check(f64_models, tmp_path, std="population", loss_type=loss_type, kl_estimator="k3",
           accumulation=accumulation, steps_per_generation=steps_per_generation)
