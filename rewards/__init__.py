"""Rule-based verifiers usable as TRL reward functions (installed as ``trl_grpo_plus.rewards``)."""

from .base import Verifier, completion_text
from .combine import Combined, combine
from .registry import ENTRY_POINT_GROUP, get_verifier, list_verifiers, register_verifier

__all__ = [
    "ENTRY_POINT_GROUP",
    "Combined",
    "Verifier",
    "combine",
    "completion_text",
    "get_verifier",
    "list_verifiers",
    "register_verifier",
]
