"""Pick-by-name helper shared by the algos modules: an unknown name fails with the list of valid ones."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(kind: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise ``ValueError`` naming the valid ones."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid values are: {', '.join(repr(v) for v in valid)}")
    return value
