"""Group-relative advantages (DeepSeekMath GRPO, outcome supervision).

    Â_i = (r_i − mean_g(r)) / (std(r) + eps)

- ``std="sample"`` divides the squared deviations by (n − 1) (Bessel; TRL's choice), ``"population"`` by n,
  and ``"none"`` skips the division entirely (Dr. GRPO: Â_i = r_i − mean_g(r)).
- ``scope`` picks the set the std is taken over: ``"group"`` (the G completions of one prompt) or ``"batch"``
  (all rewards passed in, as TRL's ``scale_rewards="batch"`` / LitePPO). The baseline is always the group mean;
  for a batch mean too, pass ``group_size=len(rewards)``.
- NaN rewards (a verifier returned None) are left out of the mean, the std and the count n. Their advantage is
  exactly 0, so they carry no policy-gradient signal (the trainer still keeps them in the KL term).
- A group whose valid rewards are all equal (including a group with fewer than two valid rewards) gets exactly 0,
  never NaN and never a rounding residue.

Inputs are flat, group-major: rewards[k * G + j] is completion j of prompt k. Rewards here are already global (the
trainer gathers them from every process first), so nothing in this module reduces across processes.
"""

from __future__ import annotations

import torch

from ._choices import check_choice

STD_ESTIMATORS = ("sample", "population", "none")
SCOPES = ("group", "batch")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """View flat rewards [N] as [N/G, G], with a clear error when N is not a multiple of G."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (one reward per completion), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards cannot be split into groups of {group_size}")
    return rewards.view(-1, group_size)  # [K, G]


def masked_mean_std(x: torch.Tensor, valid: torch.Tensor, ddof: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise mean and std of ``x`` over the entries where ``valid`` is True.

    mean = Σ_j v_j x_j / n,   std = sqrt(Σ_j v_j (x_j − mean)² / max(n − ddof, 1)),   n = Σ_j v_j
    Rows with no valid entry get mean 0 and std 0.
    """
    v = valid.to(x.dtype)  # [K, M]
    x0 = torch.where(valid, x, torch.zeros_like(x))  # [K, M] NaN-free
    n = v.sum(dim=-1, keepdim=True)  # [K, 1]
    mean = x0.sum(dim=-1, keepdim=True) / n.clamp(min=1)  # [K, 1]
    sq = ((x0 - mean) * v) ** 2  # [K, M]
    std = (sq.sum(dim=-1, keepdim=True) / (n - ddof).clamp(min=1)).sqrt()  # [K, 1]
    return mean, std


def _flat(grouped: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[K] True where the valid entries of a row are all equal (max = min) or fewer than two."""
    hi = torch.where(valid, grouped, -torch.inf).amax(dim=-1)  # [K]
    lo = torch.where(valid, grouped, torch.inf).amin(dim=-1)  # [K]
    return (hi == lo) | (valid.sum(dim=-1) < 2)  # [K]


def constant_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """True for each group whose valid rewards are all equal (max = min), or that has < 2 valid rewards.

    Returns a bool tensor [N/G]. Such groups have zero variance and carry no learning signal.
    """
    grouped = _grouped(rewards, group_size)  # [K, G]
    return _flat(grouped, ~torch.isnan(grouped))  # [K]


def group_advantages(
    rewards: torch.Tensor, group_size: int, std: str = "sample", scope: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Â_i = (r_i − mean_g) / (std + eps), NaN-aware; see the module docstring for every convention.

    rewards: [N] group-major, N = K·G. Returns [N] in the dtype of ``rewards``.
    """
    check_choice("std estimator", std, STD_ESTIMATORS)
    check_choice("std scope", scope, SCOPES)
    grouped = _grouped(rewards, group_size)  # [K, G]
    valid = ~torch.isnan(grouped)  # [K, G]
    ddof = 1 if std == "sample" else 0
    mean, spread = masked_mean_std(grouped, valid, ddof=ddof)  # [K, 1], [K, 1]
    adv = grouped - mean  # [K, G] (NaN where the reward is NaN)
    if std != "none":
        if scope == "batch":
            _, spread = masked_mean_std(grouped.reshape(1, -1), valid.reshape(1, -1), ddof=ddof)  # [1, 1]
        adv = adv / (spread + eps)  # [K, G]
    keep = valid & ~_flat(grouped, valid).unsqueeze(-1)  # [K, G]
    return torch.where(keep, adv, 0.0).reshape(-1)  # [N] exact 0 for NaN rewards and flat groups


def advantage_stats(rewards: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Counts for logging, as tensors: zero-variance groups, groups, and excluded (NaN-reward) samples.

    zero_variance_groups = Σ_k [group k is constant],  groups = N/G,  excluded = Σ_i [r_i is NaN]
    Counts (not fractions) so that callers can sum them over batches or processes before dividing.
    """
    flat = constant_groups(rewards, group_size)  # [K]
    return {
        "zero_variance_groups": flat.sum(),  # []
        "groups": torch.tensor(flat.numel(), device=rewards.device),  # []
        "excluded": torch.isnan(rewards).sum(),  # []
    }
