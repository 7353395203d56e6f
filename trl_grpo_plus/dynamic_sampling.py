"""DAPO's dynamic sampling (Yu et al. 2025, §3.2): keep the groups with signal, regenerate until there are enough.

A group "has signal" when some advantage of its completions is not 0, i.e. its rewards are not all equal (an
all-equal group, or one with fewer than two scored completions, gets Â = 0 exactly: ``algos.advantages``). Every
process holds whole groups (``GRPOPlusConfig`` checks it), so a group is kept or dropped as a whole, and its
advantages, computed when it was generated, do not depend on the other groups (scale_rewards 'group' or 'none').

The helpers here work on TRL's batch dicts; the trainer decides the rounds (``GRPOPlusTrainer._plus_generate``).
"""

from __future__ import annotations

import torch

__all__ = ["MERGEABLE_KEYS", "draw_groups", "merge_groups", "signal_groups"]

# Keys of a TRL generation batch that can be cut into groups and put together again; any other key (images, ...)
# is refused, because its rows do not line up with the completions.
LEFT_PADDED = {"prompt_ids", "prompt_mask"}
MERGEABLE_KEYS = LEFT_PADDED | {"completion_ids", "completion_mask", "advantages", "old_per_token_logps",
                                "ref_per_token_logps", "sampling_per_token_logps", "importance_sampling_ratio",
                                "tool_mask", "num_items_in_batch"}


def signal_groups(advantages: torch.Tensor, group_size: int) -> list[bool]:
    """For each local group: True when some completion has a non-zero advantage ([B] or [B, T] advantages)."""
    flat = advantages.reshape(advantages.size(0), -1)  # [B, T or 1]
    return (flat != 0).any(dim=1).view(-1, group_size).any(dim=1).tolist()  # [B/G]


def _pad_value(key: str, pad_token_id: int) -> float:
    return pad_token_id if key in ("prompt_ids", "completion_ids") else 1 if key == "tool_mask" else 0


def merge_groups(picks: list[tuple[dict, int]], group_size: int, pad_token_id: int) -> dict:
    """One batch from (batch, group index) picks: rows of each group in order, tensors padded to a common width
    (prompts on the left, completions on the right, as TRL pads them). ``num_items_in_batch`` is left out: it
    counts tokens over every process and must be recomputed by the caller."""
    first = picks[0][0]
    unknown = sorted(k for k, v in first.items() if v is not None and k not in MERGEABLE_KEYS)
    if unknown:
        raise ValueError(f"dynamic_sampling cannot regroup batches with {', '.join(unknown)} (multimodal or tool "
                         "inputs are not supported with it); set dynamic_sampling=False.")
    merged = {}
    for key, value in first.items():
        if key == "num_items_in_batch" or value is None:
            continue
        parts = [batch[key][g * group_size : (g + 1) * group_size] for batch, g in picks]
        if value.dim() == 2:
            width = max(p.size(1) for p in parts)
            fill = _pad_value(key, pad_token_id)
            padded = []
            for p in parts:
                extra = p.new_full((p.size(0), width - p.size(1)), fill)
                padded.append(torch.cat([extra, p] if key in LEFT_PADDED else [p, extra], dim=1))
            parts = padded
        merged[key] = torch.cat(parts, dim=0)
    return merged


def draw_groups(dataset, num_prompts: int, group_size: int, generator: torch.Generator) -> list[dict]:
    """Rows for ``num_prompts`` fresh prompts drawn at random from ``dataset``, each repeated G times (TRL's layout:
    the G completions of a prompt are consecutive)."""
    indices = torch.randint(len(dataset), (num_prompts,), generator=generator).tolist()
    rows = []
    for index in indices:
        row = dict(dataset[index])
        rows.extend(dict(row) for _ in range(group_size))
    return rows
