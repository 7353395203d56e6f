"""Process supervision (DeepSeekMath §4.1.3): step rewards → normalised step rewards → per-token advantages.

Output i of a group has steps j = 1..K_i; step j ends at token index(j) and has reward r_i^index(j). With R the
rewards of every step of the G outputs of the prompt:

    r̃_i^index(j) = (r_i^index(j) − mean(R)) / (std(R) + eps)          (std "sample" ÷(n−1), "population" ÷n,
                                                                        "none": no division; n = |R|)
    Â_{i,t} = Σ_{index(j) ≥ t} r̃_i^index(j)                            (the steps that end at or after token t)

``scope="batch"`` takes the std over every step of the batch (the mean stays the group's), as TRL's
``scale_rewards="batch"`` does for outcome rewards. A group whose step rewards are all equal, or that has fewer than
two steps, gets r̃ = 0 (no signal, never NaN). Tokens after the last step of an output get Â = 0.

With one step per output, at its last token, this is outcome supervision: Â_{i,t} = Â_i on every token of o_i
(tests check this against ``advantages.group_advantages``).

Steps are flat tensors: ``step_sample[s]`` is the output (row of the batch, group-major: row // G is the group),
``step_token[s]`` the token index of its end, ``step_reward[s]`` its reward. Rows and rewards are global (the
trainer gathers the steps of every process first); ``token_advantages`` then builds one process's rows.
"""

from __future__ import annotations

import torch

from ._choices import check_choice
from .advantages import SCOPES, STD_ESTIMATORS

__all__ = ["normalized_step_rewards", "process_advantages", "token_advantages"]


def normalized_step_rewards(step_reward: torch.Tensor, step_group: torch.Tensor, num_groups: int,
                            std: str = "sample", scope: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """r̃ = (r − mean_group(R)) / (std(R) + eps) for every step; [S] in, [S] out (see the module docstring).

    step_group: [S] long, the group of each step (0 ≤ g < num_groups).
    """
    check_choice("std estimator", std, STD_ESTIMATORS)
    check_choice("std scope", scope, SCOPES)
    if step_reward.dim() != 1 or step_group.shape != step_reward.shape:
        raise ValueError(f"step_reward and step_group must be 1-D of the same length, got {tuple(step_reward.shape)} "
                         f"and {tuple(step_group.shape)}")
    if not torch.isfinite(step_reward).all():
        raise ValueError("step rewards must be finite (leave an unscorable step out instead of passing NaN)")
    zeros = step_reward.new_zeros(num_groups)  # [K]
    count = zeros.index_add(0, step_group, torch.ones_like(step_reward))  # [K]
    mean = zeros.index_add(0, step_group, step_reward) / count.clamp(min=1)  # [K]
    centred = step_reward - mean[step_group]  # [S]
    high = step_reward.new_full((num_groups,), -torch.inf).scatter_reduce(0, step_group, step_reward, "amax")  # [K]
    low = step_reward.new_full((num_groups,), torch.inf).scatter_reduce(0, step_group, step_reward, "amin")  # [K]
    flat = (high == low) | (count < 2)  # [K] no signal
    if std != "none":
        ddof = 1 if std == "sample" else 0
        if scope == "group":
            sq = step_reward.new_zeros(num_groups).index_add(0, step_group, centred**2)  # [K]
            spread = (sq / (count - ddof).clamp(min=1)).sqrt()[step_group]  # [S]
        else:
            n = step_reward.numel()
            spread = ((step_reward - step_reward.mean()) ** 2).sum().div(max(n - ddof, 1)).sqrt()  # []
        centred = centred / (spread + eps)  # [S]
    return torch.where(flat[step_group], torch.zeros_like(centred), centred)  # [S]


def token_advantages(r_tilde: torch.Tensor, step_sample: torch.Tensor, step_token: torch.Tensor, num_samples: int,
                     length: int) -> torch.Tensor:
    """Â_{i,t} = Σ_{steps j of row i with token_j ≥ t} r̃_j as a [num_samples, length] tensor.

    Each r̃_j is placed at its end token, then summed from the right (a reversed cumulative sum). step_sample must be
    in [0, num_samples) and step_token in [0, length).
    """
    if step_sample.numel() and (int(step_sample.min()) < 0 or int(step_sample.max()) >= num_samples):
        raise ValueError(f"step_sample out of range [0, {num_samples})")
    if step_token.numel() and (int(step_token.min()) < 0 or int(step_token.max()) >= length):
        raise ValueError(f"step_token out of range [0, {length})")
    placed = r_tilde.new_zeros(num_samples * length)  # [N·T]
    placed = placed.index_add(0, step_sample * length + step_token, r_tilde).view(num_samples, length)  # [N, T]
    return placed.flip(-1).cumsum(-1).flip(-1)  # [N, T]


def process_advantages(step_reward: torch.Tensor, step_sample: torch.Tensor, step_token: torch.Tensor,
                       group_size: int, num_samples: int, length: int, std: str = "sample", scope: str = "group",
                       eps: float = 1e-4) -> torch.Tensor:
    """Both steps on one batch: [num_samples, length] advantages from flat steps (num_samples = K·G rows)."""
    if group_size < 1 or num_samples % group_size != 0:
        raise ValueError(f"{num_samples} samples cannot be split into groups of {group_size}")
    r_tilde = normalized_step_rewards(step_reward, step_sample // group_size, num_samples // group_size, std, scope,
                                      eps)  # [S]
    return token_advantages(r_tilde, step_sample, step_token, num_samples, length)  # [N, T]
