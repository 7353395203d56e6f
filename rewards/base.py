"""The verifier contract shared by every built-in verifier.

A verifier is a TRL reward function: ``verifier(prompts, completions, **columns) -> list[float | None]``.
It is a picklable class instance (not a closure), has ``__name__``, never raises into the trainer,
returns ``None`` for what it cannot score, and counts what happened in ``stats``.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger(__name__)


def completion_text(completion) -> str:
    """Plain text of a completion: a string, or a chat message list (the assistant turns' text)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        turns = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in turns if m.get("role", "assistant") == "assistant"]
        return "\n".join(_content_text(m.get("content")) for m in (assistant or turns))
    return str(completion)


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


class Verifier:
    """Base class. Subclasses implement ``score(completion, **row) -> float | None`` or, for batch
    work, override ``score_batch``. ``row`` holds the dataset columns of that sample."""

    registry_name: str = ""

    def __init__(self, *, name: str | None = None):
        self.__name__ = name or self.registry_name or type(self).__name__
        self.stats: Counter = Counter()

    def score(self, completion: str, **row) -> float | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_batch(self, prompts, completions: list[str], columns: dict) -> list[float | None]:
        out = []
        for i, completion in enumerate(completions):
            row = {k: (v[i] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v)
                   for k, v in columns.items()}
            try:
                out.append(self.score(completion, **row))
            except Exception as exc:
                self.stats["errors"] += 1
                logger.warning("%s: scoring sample %d raised %r; scored None", self.__name__, i, exc)
                out.append(None)
        return out

    def __call__(self, prompts=None, completions=None, **columns) -> list[float | None]:
        completions = list(completions or [])
        texts = [completion_text(c) for c in completions]
        try:
            scores = list(self.score_batch(prompts, texts, columns))
            if len(scores) != len(texts):
                raise RuntimeError(f"score_batch returned {len(scores)} scores for {len(texts)} completions")
        except Exception as exc:
            self.stats["errors"] += len(texts)
            logger.warning("%s: scoring a batch of %d raised %r; all scored None", self.__name__, len(texts), exc)
            scores = [None] * len(texts)
        self.stats["calls"] += 1
        self.stats["samples"] += len(texts)
        self.stats["unscorable"] += sum(s is None for s in scores)
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"
