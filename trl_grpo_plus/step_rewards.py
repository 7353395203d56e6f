"""The step-reward contract for process supervision (``process_supervision=True``), and the map from text to tokens.

**The one form.** For each completion a reward function returns either a float / None (outcome reward) or a list
of steps ``[(end_char_offset, reward), ...]``:

- ``end_char_offset`` (int ≥ 1): where the step ends, as an offset into the completion text the function was given
  (``completion_text(completion)``: the string itself, or the assistant content of a chat completion). Step j
  covers ``text[end_{j−1}:end_j]``. Offsets strictly increase; one past the text's end counts as the end.
- ``reward`` (finite float): the step's reward r_i^index(j).
- ``[]``: no step (like None: the function could not score this completion).

A float from a function counts as one step ending at the completion's last token; with only such steps, process
supervision gives the outcome advantages. TRL logs, for a function that returned steps, the mean of its step
rewards (``rewards/<name>/mean``); the training signal comes from the steps themselves.

**Text to tokens.** index(j) is the completion token that holds the step's last character: the smallest k with
``len(decode(ids[:k+1])) ≥ end_char_offset`` (decoding without special tokens, as TRL builds the completion text).
When the function's text is not the decoded completion (a chat template that rewrites responses), the offsets are
shifted to where that text starts in it; when it is not found at all the completion's steps are dropped (counted in
``steps/unmapped_completions``), never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["check_steps", "is_steps", "step_end_tokens", "steps_mean"]


def is_steps(value) -> bool:
    """True when a reward function's value for one completion is a step list (not a float / None)."""
    return isinstance(value, (list, tuple))


def check_steps(value, func_name: str, index: int) -> list[tuple[int, float]]:
    """Validate one completion's step list and return it as [(offset, reward)]; the error names what to fix."""
    steps, previous = [], 0
    for item in value:
        ok = isinstance(item, (list, tuple)) and len(item) == 2
        offset, reward = (item if ok else (None, None))
        if not (ok and isinstance(offset, int) and not isinstance(offset, bool) and offset > previous
                and isinstance(reward, (int, float)) and not isinstance(reward, bool) and math.isfinite(reward)):
            raise ValueError(
                f"reward function {func_name!r} returned an invalid step {item!r} for completion {index}: each step "
                "must be (end_char_offset, reward) with an int offset ≥ 1, larger than the previous step's, and a "
                "finite float reward (see trl_grpo_plus.step_rewards).")
        steps.append((offset, float(reward)))
        previous = offset
    return steps


def steps_mean(steps: Sequence[tuple[int, float]]) -> float | None:
    """The scalar TRL logs for a step list: the mean step reward (None for no step)."""
    return sum(r for _, r in steps) / len(steps) if steps else None


def step_end_tokens(decode: Callable[[list[int]], str], ids: Sequence[int], text: str,
                    offsets: Sequence[int]) -> list[int] | None:
    """Token index of the end of each step (see the module docstring); None when ``text`` is not in the decoding."""
    ids = list(ids)
    if not ids:
        return None
    decoded = decode(ids)
    shift = 0 if decoded == text else decoded.find(text) if text else -1
    if shift < 0:
        return None
    last = len(ids) - 1
    tokens = []
    low = 0
    for offset in offsets:
        target = min(offset + shift, len(decoded))
        lo, hi = low, last  # smallest k in [lo, last] with len(decode(ids[:k+1])) ≥ target
        while lo < hi:
            mid = (lo + hi) // 2
            if len(decode(ids[: mid + 1])) >= target:
                hi = mid
            else:
                lo = mid + 1
        tokens.append(lo)
        low = lo  # offsets increase, so their tokens do too
    return tokens
