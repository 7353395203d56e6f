"""The ``format`` verifier: does the completion follow ``<think>...</think><answer>...</answer>``?

Modes (tag names are configurable: ``think_tag``, ``answer_tag``):

* ``strict`` (default): the whole completion is, after optional surrounding whitespace, exactly
  ``<think>R</think>`` then optional whitespace then ``<answer>A</answer>``: each tag exactly once,
  in that order, nothing before or after, and ``A`` not blank. Score 1.0 or 0.0.
* ``soft``: a ``<think>...</think>`` pair followed (later) by a non-blank ``<answer>...</answer>``
  pair, each tag exactly once; text before, between and after is allowed. 1.0 or 0.0.
* ``partial``: credit per tag: 0.25 for each of the four tags that appears exactly once, so a
  half-formatted completion earns part of the reward.

The check works on tag positions in the whole string (no regex, linear time): "nothing after"
means nothing but whitespace up to the very end of the completion. open-r1's pattern
``^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$`` is matched with ``re.MULTILINE``,
where ``$`` matches at any line end, so ``...</answer>\\nanything`` passes there; it fails here.

``prefix_think=True`` is for chat templates that already put the opening ``<think>`` in the prompt:
the completion is then checked as if it started with it.
"""

from __future__ import annotations

import re
from typing import Literal

from .base import Verifier
from .registry import register_verifier

__all__ = ["FormatVerifier", "format_score"]

Mode = Literal["strict", "soft", "partial"]


def _tags(think: str, answer: str):
    return (f"<{think}>", f"</{think}>", f"<{answer}>", f"</{answer}>")


def format_score(text: str, mode: Mode = "strict", *, think_tag: str = "think",
                 answer_tag: str = "answer") -> float:
    """Format score of ``text`` in ``mode`` (see the module docstring)."""
    if mode not in ("strict", "soft", "partial"):
        raise ValueError(f"Unknown format mode {mode!r}; valid modes: 'strict', 'soft', 'partial'.")
    if not isinstance(text, str):
        return 0.0
    tags = _tags(think_tag, answer_tag)
    counts = [text.count(tag) for tag in tags]
    if mode == "partial":
        return 0.25 * sum(c == 1 for c in counts)
    if counts != [1, 1, 1, 1]:
        return 0.0
    t_open, t_close, a_open, a_close = (text.find(tag) for tag in tags)
    if not t_open < t_close < a_open < a_close:
        return 0.0
    answer = text[a_open + len(tags[2]):a_close]
    if not answer.strip():
        return 0.0
    if mode == "strict":
        outside = (text[:t_open], text[t_close + len(tags[1]):a_open], text[a_close + len(tags[3]):])
        if any(part.strip() for part in outside):
            return 0.0
    return 1.0


@register_verifier("format")
class FormatVerifier(Verifier):
    """TRL reward function scoring the tag format of a completion; see the module docstring.

    Options: ``mode`` (``"strict"``, ``"soft"``, ``"partial"``), ``think_tag`` (default
    ``"think"``), ``answer_tag`` (default ``"answer"``), ``prefix_think`` (default False),
    ``name``. Never None: every completion has a format. ``stats`` counts ``passed``/``failed``.
    """

    def __init__(self, *, mode: Mode = "strict", think_tag: str = "think", answer_tag: str = "answer",
                 prefix_think: bool = False, name: str | None = None):
        if mode not in ("strict", "soft", "partial"):
            raise ValueError(f"Unknown format mode {mode!r}; valid modes: 'strict', 'soft', 'partial'.")
        for tag in (think_tag, answer_tag):
            if not tag or re.search(r"[<>/\s]", tag):
                raise ValueError(f"A tag name must be a bare word like 'think', got {tag!r}.")
        super().__init__(name=name)
        self.mode = mode
        self.think_tag = think_tag
        self.answer_tag = answer_tag
        self.prefix_think = prefix_think

    def score(self, completion: str, **row) -> float:
        if self.prefix_think:
            completion = f"<{self.think_tag}>" + completion
        s = format_score(completion, self.mode, think_tag=self.think_tag, answer_tag=self.answer_tag)
        self.stats["passed" if s == 1.0 else "failed"] += 1
        return s
