"""Per-token estimators of KL(π_θ ‖ π_ref) from samples o_t ~ π_θ (Schulman, "Approximating KL divergence").

With Δ = log π_ref(o_t) − log π_θ(o_t):

    k1 = log π_θ − log π_ref = −Δ           unbiased, can be negative, high variance
    k2 = ½ (log π_θ − log π_ref)² = ½ Δ²    biased, always ≥ 0, low variance
    k3 = exp(Δ) − Δ − 1                      unbiased, always ≥ 0 (DeepSeekMath eq. 4; TRL's only choice)

Used as a *loss term* (added per token, then differentiated, as GRPO does), the gradients differ from the values:
on-policy, E[∇k1] = E[∇ log π_θ] = 0 (no regularising pull in expectation), E[∇k2] = ∇ KL(π_θ ‖ π_ref) (the
reverse-KL gradient), and E[∇k3] = ∇ KL(π_ref ‖ π_θ) (the forward-KL gradient). See docs/trainer.md.

The optional clamp bounds each per-token estimate to [−c, c] (only the upper bound can bind for k2 and k3); its
gradient is zero where it binds. The clamp is NaN-safe: where it binds, the estimator is evaluated at Δ = 0 instead
(a double ``where``), so an overflowing exp(Δ) in k3 never reaches the backward pass as 0·inf.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._choices import check_choice


def _k1(delta: torch.Tensor) -> torch.Tensor:
    """k1 = log π_θ − log π_ref = −Δ."""
    return -delta  # [B, T]


def _k2(delta: torch.Tensor) -> torch.Tensor:
    """k2 = ½ Δ²."""
    return 0.5 * delta**2  # [B, T]


def _k3(delta: torch.Tensor) -> torch.Tensor:
    """k3 = exp(Δ) − Δ − 1."""
    return torch.exp(delta) - delta - 1  # [B, T]


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3", clamp: float | None = None
) -> torch.Tensor:
    """Per-token KL estimate: k1 = −Δ, k2 = ½Δ², k3 = exp(Δ) − Δ − 1 with Δ = ref_logp − logp; then clamp to [−c, c].

    logp, ref_logp: [B, T] log-probabilities of the sampled tokens. Returns [B, T]; padding positions are not
    masked here (the aggregation masks them).
    """
    fn = KL_ESTIMATORS[check_choice("KL estimator", estimator, KL_ESTIMATORS)]
    if clamp is not None and not clamp > 0:
        raise ValueError(f"KL clamp must be a positive number or None, got {clamp!r}")
    delta = ref_logp - logp  # [B, T]
    if clamp is None:
        return fn(delta)  # [B, T]
    with torch.no_grad():
        raw = fn(delta)  # [B, T] may be inf (exp overflow), never NaN for finite Δ
        high, low = raw > clamp, raw < -clamp  # [B, T]
    safe_delta = torch.where(high | low, torch.zeros_like(delta), delta)  # [B, T] no overflow, zero grad where bound
    kl = fn(safe_delta)  # [B, T]
    kl = torch.where(high, torch.full_like(kl, clamp), kl)  # [B, T]
    return torch.where(low, torch.full_like(kl, -clamp), kl)  # [B, T]
