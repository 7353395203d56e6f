"""KL estimators: hand values, properties, clamp, and the gradients they give as loss terms."""

import math

import pytest
import torch

from trl_grpo_plus.algos.kl import kl_estimate


def test_hand_values():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    # Δ = ref − logp = (−0.5, 1.0)
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([[0.5, -1.0]], dtype=torch.float64))
    torch.testing.assert_close(kl_estimate(logp, ref, "k2"), torch.tensor([[0.125, 0.5]], dtype=torch.float64))
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]  # 0.10653, 0.71828
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([k3], dtype=torch.float64))


def test_identical_policies_give_zero_for_every_estimator():
    logp = torch.randn(3, 5)
    for estimator in ("k1", "k2", "k3"):
        assert torch.equal(kl_estimate(logp, logp.clone(), estimator), torch.zeros(3, 5))


def test_k2_k3_nonnegative_and_k1_k3_unbiased():
    # samples from p = softmax(a); q = softmax(b): E_p[k1] = E_p[k3] = KL(p‖q), E_p[k2] ≈ KL for close p, q
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, generator=generator, dtype=torch.float64), torch.randn(6, generator=generator, dtype=torch.float64)
    logp_all, logq_all = torch.log_softmax(a, 0), torch.log_softmax(b, 0)
    exact = (logp_all.exp() * (logp_all - logq_all)).sum()
    probs = logp_all.exp()  # expectation by exact enumeration instead of sampling
    for estimator in ("k1", "k3"):
        value = (probs * kl_estimate(logp_all, logq_all, estimator)).sum()
        assert value.item() == pytest.approx(exact.item(), abs=1e-12)
    assert (kl_estimate(torch.randn(100), torch.randn(100), "k2") >= 0).all()
    assert (kl_estimate(torch.randn(100), torch.randn(100), "k3") >= 0).all()


def test_clamp_bounds_both_sides_and_stops_gradient_where_it_binds():
    logp = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    ref = torch.tensor([-3.0, 0.1, 3.0])
    out = kl_estimate(logp, ref, "k1", clamp=1.0)  # k1 = (3, −0.1, −3) → (1, −0.1, −1)
    torch.testing.assert_close(out, torch.tensor([1.0, -0.1, -1.0]))
    out.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([0.0, 1.0, 0.0]))


def test_loss_term_gradients_are_reverse_kl_for_k2_and_zero_mean_for_k1():
    # d/dθ E_p[k(θ)] where only the sample's log-prob carries θ (samples held fixed, as in GRPO's loss)
    generator = torch.Generator().manual_seed(1)
    theta = torch.randn(5, generator=generator, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(5, generator=generator, dtype=torch.float64), 0)
    logp = torch.log_softmax(theta, 0)
    probs = logp.exp().detach()
    reverse_kl = (logp.exp() * (logp - ref)).sum()
    (true_grad,) = torch.autograd.grad(reverse_kl, theta, retain_graph=True)
    (k2_grad,) = torch.autograd.grad((probs * kl_estimate(logp, ref, "k2")).sum(), theta, retain_graph=True)
    (k1_grad,) = torch.autograd.grad((probs * kl_estimate(logp, ref, "k1")).sum(), theta)
    torch.testing.assert_close(k2_grad, true_grad)
    torch.testing.assert_close(k1_grad, torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_unknown_estimator_and_bad_clamp():
    with pytest.raises(ValueError, match="'k1', 'k2', 'k3'"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k4")
    with pytest.raises(ValueError, match="positive"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k3", clamp=0.0)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_clamp_is_nan_safe_when_the_estimate_overflows(estimator):
    # float32, clamp 10, Δ = 100: exp(100) = inf in float32, so clamping k3 after the fact gives 0·inf = NaN in the
    # backward pass. The clamp must keep the value at the bound and the gradient at exactly 0 there, and leave the
    # unclamped token (Δ = 0.5) untouched.
    logp = torch.tensor([-100.0, -1.0, 0.0], requires_grad=True)
    ref = torch.tensor([0.0, -0.5, 100.0])  # Δ = ref − logp = (100, 0.5, 100)
    out = kl_estimate(logp, ref, estimator, clamp=10.0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(logp.grad).all()
    # Δ = 100 binds the upper bound for k2, k3 (≈ 5000, inf) and the lower bound for k1 (−100)
    bound = -10.0 if estimator == "k1" else 10.0
    assert out[0].item() == bound and out[2].item() == bound
    assert logp.grad[0].item() == 0.0 and logp.grad[2].item() == 0.0
    # middle token, Δ = 0.5: dk/dlogp = −dk/dΔ: k1: +1, k2: −Δ = −0.5, k3: −(e^Δ − 1)
    expected = {"k1": 1.0, "k2": -0.5, "k3": -(math.exp(0.5) - 1)}[estimator]
    assert logp.grad[1].item() == pytest.approx(expected, rel=1e-6)
