"""Reductions of a per-token loss ℓ_{i,t} (mask m_{i,t}, |o_i| = Σ_t m_{i,t}) to a scalar.

    sequence   1/n Σ_i ( 1/|o_i| Σ_t m_{i,t} ℓ_{i,t} )     DeepSeekMath GRPO  (TRL loss_type="grpo")
    token      Σ_i Σ_t m_{i,t} ℓ_{i,t} / Σ_i |o_i|          DAPO token mean    (TRL "bnpo" local, "dapo" global)
    constant   Σ_i Σ_t m_{i,t} ℓ_{i,t} / (n · L_max)        Dr. GRPO           (TRL "dr_grpo", L_max = max length)

Every mode is a ratio numerator / denominator of *sums*, so ``aggregate_parts`` returns the two local sums and a
caller that spans processes or accumulation micro-batches adds them up before dividing (STYLE.md, point 2).
``aggregate`` is the single-batch convenience. ℓ may also be [n, 1] (one value per sequence); it broadcasts.
"""

from __future__ import annotations

import torch

from ._choices import check_choice

MODES = ("sequence", "token", "constant")

# TRL's loss_type names for the clipped-surrogate family, mapped to the reduction each one uses.
MODE_FOR_LOSS_TYPE = {"grpo": "sequence", "bnpo": "token", "dapo": "token", "dr_grpo": "constant"}


def aggregate_parts(
    per_token_loss: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local (numerator, denominator) of the chosen reduction; the loss is Σ numerators / Σ denominators.

    sequence: (Σ_i Σ_t mℓ / max(|o_i|, 1),  n)    token: (Σ mℓ,  Σ m)    constant: (Σ mℓ,  n · max_len)
    per_token_loss: [n, T] or [n, 1]; mask: [n, T] (0/1). Both returned tensors are 0-dim.
    """
    check_choice("aggregation mode", mode, MODES)
    mask = mask.to(per_token_loss.dtype)  # [n, T]
    masked = per_token_loss * mask  # [n, T]
    n_seq = mask.new_tensor(float(mask.size(0)))  # []
    if mode == "sequence":
        per_seq = masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)  # [n]
        return per_seq.sum(), n_seq  # [], []
    if mode == "token":
        return masked.sum(), mask.sum()  # [], []
    if max_len is None or max_len < 1:
        raise ValueError("mode='constant' needs max_len, the maximum completion length (L_max in Dr. GRPO)")
    return masked.sum(), n_seq * max_len  # [], []


def aggregate(per_token_loss: torch.Tensor, mask: torch.Tensor, mode: str, max_len: int | None = None) -> torch.Tensor:
    """numerator / max(denominator, 1) of ``aggregate_parts`` on one batch; returns a 0-dim tensor."""
    numerator, denominator = aggregate_parts(per_token_loss, mask, mode, max_len)  # [], []
    return numerator / denominator.clamp(min=1.0)  # []
