"""Pure-torch GRPO math. Nothing here imports trl, transformers or accelerate.

Functions take tensors and scalars and return tensors; choices are picked by name and an unknown name fails with
the list of valid ones. Reductions return local sums and counts; the trainer reduces them across processes.
"""

from .advantages import STD_ESTIMATORS, advantage_stats, constant_groups, group_advantages
from .aggregation import MODE_FOR_LOSS_TYPE, MODES, aggregate, aggregate_parts
from .kl import KL_ESTIMATORS, kl_estimate
from .policy_loss import clip_counts, clipped_surrogate
from .process import normalized_step_rewards, process_advantages, token_advantages

__all__ = [
    "KL_ESTIMATORS",
    "MODES",
    "MODE_FOR_LOSS_TYPE",
    "STD_ESTIMATORS",
    "advantage_stats",
    "aggregate",
    "aggregate_parts",
    "clip_counts",
    "clipped_surrogate",
    "constant_groups",
    "group_advantages",
    "kl_estimate",
    "normalized_step_rewards",
    "process_advantages",
    "token_advantages",
]
