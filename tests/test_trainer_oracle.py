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
from grpo_testlib import oracle_loss

EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.04


@pytest.fixture(scope="module")
def f64_models(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    return tokenizer, initial


def _trainer_loss_and_grads(f64_models, tmp_path, **cfg):
    tokenizer, initial = f64_models
    trainer, inputs = fixed_batch_trainer(initial.config._name_or_path, tmp_path, dtype=torch.float64,
                                          epsilon=EPS_LOW, epsilon_high=EPS_HIGH, beta=BETA, **cfg)
    assert "old_per_token_logps" in inputs and "ref_per_token_logps" in inputs
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return trainer, loss.detach(), grads


def _oracle_loss_and_grads(f64_models, trainer, *, std, scope, eps, loss_type, kl_estimator, kl_clamp=None,
                           kl_times_ratio=False):
    from transformers import Qwen2ForCausalLM

    _, initial = f64_models
    policy = Qwen2ForCausalLM(initial.config).to(torch.float64)  # plain forward, no TRL fused head
    policy.load_state_dict(trainer.model.state_dict())
    advantages = oracle_advantages(REWARDS, 4, std, scope, eps)
    prompts = [PROMPT_IDS[i // 4] for i in range(12)]
    loss, clipped = oracle_loss(policy, initial, initial, prompts, COMPLETION_IDS, advantages, loss_type=loss_type,
                                beta=BETA, kl_estimator=kl_estimator, eps_low=EPS_LOW, eps_high=EPS_HIGH,
                                max_len=MAX_LEN, kl_clamp=kl_clamp, kl_times_ratio=kl_times_ratio)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}, clipped


def _check(f64_models, tmp_path, *, std, loss_type, kl_estimator, kl_clamp=None, scale_rewards="group",
           kl_times_ratio=False):
    cfg = dict(loss_type=loss_type, kl_estimator=kl_estimator, kl_clamp=kl_clamp, scale_rewards=scale_rewards,
               use_bias_correction_kl=kl_times_ratio)
    if std != "none":
        cfg["std_estimator"] = std
    else:
        cfg["scale_rewards"] = "none"
    trainer, loss, grads = _trainer_loss_and_grads(f64_models, tmp_path, **cfg)
    scope = "batch" if scale_rewards == "batch" else "group"
    expected, expected_grads, clipped = _oracle_loss_and_grads(
        f64_models, trainer, std=std, scope=scope, eps=1e-4, loss_type=loss_type, kl_estimator=kl_estimator,
        kl_clamp=kl_clamp, kl_times_ratio=kl_times_ratio)
    assert clipped > 0, "the perturbation must make the clip bind somewhere, or the test proves less"
    assert loss.dtype == torch.float64
    assert abs(loss.item() - expected.item()) <= 1e-6, (loss.item(), expected.item())
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=0, atol=1e-6, msg=name)


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
