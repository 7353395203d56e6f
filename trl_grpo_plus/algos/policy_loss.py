"""PPO-style clipped surrogate used by GRPO, with DAPO's decoupled ("clip-higher") bounds.

    ρ_{i,t} = π_θ(o_{i,t}) / π_old(o_{i,t})
    ℓ_{i,t} = −min( ρ_{i,t} Â_i,  clip(ρ_{i,t}, 1 − ε_low, 1 + ε_high) Â_i )

ε_low = ε_high gives DeepSeekMath's symmetric clip. ``delta`` (INTELLECT-2's two-sided clip) additionally caps the
unclipped ratio at δ in the first term. The clip fractions count the tokens whose gradient the clip removes:
low = [ρ < 1 − ε_low and Â < 0], high = [ρ > 1 + ε_high and Â > 0].
"""

from __future__ import annotations

import torch


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    delta: float | None = None,
) -> torch.Tensor:
    """ℓ = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A), with ρ capped at δ in the first term when δ is given.

    ratio: [B, T] (token-level) or [B, 1] (sequence-level); advantages: [B, 1] or [B, T]. Returns the broadcast
    shape; masking and reduction are left to ``aggregation``.
    """
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # [B, T]
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)  # [B, T]
    return -torch.min(ratio * advantages, clipped * advantages)  # [B, T]


def clip_counts(
    ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> dict[str, torch.Tensor]:
    """Per-sequence local counts of clipped tokens; sum them (over sequences, then processes) before dividing.

    low_i = Σ_t m·[ρ < 1−ε_low ∧ A < 0],  high_i = Σ_t m·[ρ > 1+ε_high ∧ A > 0],  region_i = Σ_t m·[low ∨ high],
    count_i = Σ_t m.  With a sequence-level ratio [B, 1] every sequence counts once (m is 1 per sequence).
    Returns tensors of shape [B].
    """
    weight = (mask if ratio.shape[-1] == mask.shape[-1] else torch.ones_like(ratio)).to(ratio.dtype)  # [B, T]
    low = (ratio < 1 - epsilon_low) & (advantages < 0)  # [B, T]
    high = (ratio > 1 + epsilon_high) & (advantages > 0)  # [B, T]
    return {
        "low": (low * weight).sum(dim=-1),  # [B]
        "high": (high * weight).sum(dim=-1),  # [B]
        "region": ((low | high) * weight).sum(dim=-1),  # [B]
        "count": weight.sum(dim=-1),  # [B]
    }
