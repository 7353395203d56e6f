"""Length-shaped and surface rewards as registered verifiers: ``overlong``, ``length``, ``repetition``, ``language``.

Each is a TRL reward function with ``stats``. Lengths are counted in tokens from the ``completion_ids`` column TRL
passes to every reward function (``unit="chars"`` counts characters instead, for use outside a trainer). When the
length cannot be known (no ``completion_ids``), the score is None: a shaped reward never guesses.

``overlong``: DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), with L = |y|, L_max = ``max_length``,
L_cache = ``cache_length``::

    R(y) = 0                                   L ≤ L_max − L_cache
         = ((L_max − L_cache) − L) / L_cache   L_max − L_cache < L ≤ L_max      (from 0 down to −1)
         = −1                                  L > L_max

``length``: a length reward tied to correctness (the ``correctness`` verifier, ``math`` by default; a completion
is correct when its score ≥ ``threshold``; a None there gives None here). Two shapes:

* ``shape="cosine"`` (Yeo et al. 2025, "Demystifying long chain-of-thought reasoning in LLMs"), with
  c(L) = ½ (1 + cos(π · min(L, L_max) / L_max))  (1 at L = 0, 0 at L_max)::

      correct:  r = correct_long + (correct_short − correct_long) · c(L)     (shorter right answers earn more)
      wrong:    r = wrong_long + (wrong_short − wrong_long) · c(L)           (shorter wrong answers lose more)

  defaults correct_short = 1.0, correct_long = 0.5, wrong_short = −1.0, wrong_long = −0.5.
* ``shape="linear"`` (Kimi k1.5 length penalty, Kimi Team 2025), relative to the completions of the same
  prompt (rows with an equal prompt form a group): λ = 0.5 − (L − L_min) / (L_max,group − L_min); correct: r = λ,
  wrong: r = min(0, λ). A group whose lengths are all equal gets λ = 0.

``repetition``: the n-gram repetition penalty of Yeo et al. 2025: with the completion's n-grams (n =
``ngram_size``, over lower-cased whitespace words, or over token ids with ``unit="tokens"``),
r = ``max_penalty`` · (1 − #distinct n-grams / #n-grams); 0 for a completion shorter than n units. ``max_penalty``
is ≤ 0 (default −1).

``language``: DeepSeek-R1's language-consistency reward (DeepSeek-AI 2025, §2.3.2), measured by script: the
fraction of the letters of the chain of thought that belong to the target script. The chain of thought is the text
inside ``<think>…</think>`` when that pair is present, else the whole completion; LaTeX math (``$…$``, ``\\(…\\)``,
``\\[…\\]``, ``\\command``), code blocks and inline code are left out, and only letters count (digits, punctuation and
symbols do not). ``target`` is a script (``"Latin"``, ``"Han"``, ``"Cyrillic"``, …) or a language code mapped to its
scripts (``"en"`` → Latin, ``"zh"`` → Han, ``"ja"`` → Han + Hiragana + Katakana, …). None when there is no letter.
What it cannot do: tell apart languages that share a script (English and French are both Latin).
"""

from __future__ import annotations

import math
import re
import unicodedata
from functools import lru_cache

from .base import Verifier
from .registry import get_verifier, register_verifier

__all__ = ["LanguageVerifier", "LengthVerifier", "OverlongVerifier", "RepetitionVerifier", "cosine_length_reward",
           "letter_scripts", "overlong_penalty", "repetition_penalty", "script_fraction"]

UNITS = ("tokens", "chars")


def _check_unit(owner: str, unit: str) -> str:
    if unit not in UNITS:
        raise ValueError(f"get_verifier({owner!r}): unit={unit!r} is not valid; choose 'tokens' (from TRL's "
                         "completion_ids column) or 'chars'.")
    return unit


def _length(unit: str, completion: str, row: dict) -> int | None:
    """|y| in tokens (len of the completion_ids column) or characters; None when the token ids are missing."""
    if unit == "chars":
        return len(completion)
    ids = row.get("completion_ids")
    return len(ids) if isinstance(ids, (list, tuple)) else None


def overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (module docstring): 0, then linear from 0 to −1 over the cache, then −1."""
    soft_start = max_length - cache_length
    if length <= soft_start:
        return 0.0
    if length <= max_length:
        return (soft_start - length) / cache_length
    return -1.0


@register_verifier("overlong")
class OverlongVerifier(Verifier):
    """DAPO's soft overlong punishment. Options: ``max_length`` (L_max: set it to the trainer's
    max_completion_length), ``cache_length`` (L_cache, the soft zone; 0 < L_cache ≤ L_max), ``unit``, ``name``.
    ``stats``: ``within`` (no penalty), ``soft_zone``, ``over_limit``, ``no_length``."""

    def __init__(self, *, max_length: int, cache_length: int, unit: str = "tokens", name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(max_length, int) and isinstance(cache_length, int) and 0 < cache_length <= max_length):
            raise ValueError(f"get_verifier('overlong'): need integers 0 < cache_length ≤ max_length, got "
                             f"max_length={max_length!r}, cache_length={cache_length!r} (DAPO: 20480 and 4096).")
        self.max_length, self.cache_length = max_length, cache_length
        self.unit = _check_unit("overlong", unit)

    def score(self, completion: str, **row) -> float | None:
        length = _length(self.unit, completion, row)
        if length is None:
            self.stats["no_length"] += 1
            return None
        penalty = overlong_penalty(length, self.max_length, self.cache_length)
        key = "within" if penalty == 0 else "over_limit" if length > self.max_length else "soft_zone"
        self.stats[key] += 1
        return penalty


def cosine_length_reward(length: int, max_length: int, short: float, long: float) -> float:
    """long + (short − long) · ½(1 + cos(π · min(L, L_max) / L_max)): ``short`` at L = 0, ``long`` at L ≥ L_max."""
    progress = min(length, max_length) / max_length
    return long + (short - long) * 0.5 * (1.0 + math.cos(math.pi * progress))


SHAPES = ("cosine", "linear")


@register_verifier("length")
class LengthVerifier(Verifier):
    """A length reward tied to correctness (module docstring). Options: ``shape`` ('cosine' or 'linear'),
    ``correctness`` (a verifier or registry name, default 'math'; its options via ``correctness_options``),
    ``threshold`` (correct when the correctness score ≥ it, default 1.0), ``max_length`` (cosine's L_max, required
    for it), ``correct_short``, ``correct_long``, ``wrong_short``, ``wrong_long`` (cosine's end values), ``unit``,
    ``name``. ``stats``: ``correct``, ``wrong``, ``unjudged`` (correctness None), ``no_length``."""

    def __init__(self, *, shape: str = "cosine", correctness="math", correctness_options: dict | None = None,
                 threshold: float = 1.0, max_length: int | None = None, correct_short: float = 1.0,
                 correct_long: float = 0.5, wrong_short: float = -1.0, wrong_long: float = -0.5,
                 unit: str = "tokens", name: str | None = None):
        super().__init__(name=name)
        if shape not in SHAPES:
            raise ValueError(f"get_verifier('length'): shape={shape!r} is not valid; choose 'cosine' or 'linear'.")
        if shape == "cosine" and not (isinstance(max_length, int) and max_length > 0):
            raise ValueError(f"get_verifier('length', shape='cosine') needs max_length (L_max, a positive integer: "
                             f"the trainer's max_completion_length), got {max_length!r}.")
        self.shape, self.max_length, self.threshold = shape, max_length, float(threshold)
        self.ends = (float(correct_short), float(correct_long), float(wrong_short), float(wrong_long))
        self.unit = _check_unit("length", unit)
        self.correctness = (get_verifier(correctness, **(correctness_options or {})) if isinstance(correctness, str)
                            else correctness)
        if not callable(self.correctness):
            raise TypeError(f"get_verifier('length'): correctness={correctness!r} is not a reward function.")

    def score_batch(self, prompts, completions: list[str], columns: dict) -> list[float | None]:
        n = len(completions)
        verdicts = list(self.correctness(prompts=prompts, completions=completions, **columns))
        if len(verdicts) != n:
            raise RuntimeError(f"the correctness verifier returned {len(verdicts)} scores for {n} completions")
        rows = [{k: (v[i] if isinstance(v, (list, tuple)) and len(v) == n else v) for k, v in columns.items()}
                for i in range(n)]
        lengths = [_length(self.unit, c, row) for c, row in zip(completions, rows)]
        out: list[float | None] = [None] * n
        judged = []
        for i, (verdict, length) in enumerate(zip(verdicts, lengths)):
            if length is None:
                self.stats["no_length"] += 1
            elif verdict is None or (isinstance(verdict, float) and math.isnan(verdict)):
                self.stats["unjudged"] += 1
            else:
                judged.append(i)
        span = self._group_spans(prompts, lengths, judged) if self.shape == "linear" else {}
        for i in judged:
            correct = verdicts[i] >= self.threshold
            self.stats["correct" if correct else "wrong"] += 1
            if self.shape == "cosine":
                c_short, c_long, w_short, w_long = self.ends
                short, long = (c_short, c_long) if correct else (w_short, w_long)
                out[i] = cosine_length_reward(lengths[i], self.max_length, short, long)
            else:
                low, high = span[i]
                lam = 0.0 if high == low else 0.5 - (lengths[i] - low) / (high - low)
                out[i] = lam if correct else min(0.0, lam)
        return out

    @staticmethod
    def _group_spans(prompts, lengths, judged) -> dict[int, tuple[int, int]]:
        """(L_min, L_max) over the judged completions of the same prompt, for each judged row."""
        keys = [repr(p) for p in (prompts or [None] * len(lengths))]
        groups: dict[str, list[int]] = {}
        for i in judged:
            groups.setdefault(keys[i], []).append(lengths[i])
        return {i: (min(groups[keys[i]]), max(groups[keys[i]])) for i in judged}


def repetition_penalty(units: list, ngram_size: int, max_penalty: float) -> float:
    """max_penalty · (1 − #distinct n-grams / #n-grams); 0 when there are fewer than n units."""
    total = len(units) - ngram_size + 1
    if total < 1:
        return 0.0
    distinct = len({tuple(units[k : k + ngram_size]) for k in range(total)})
    return max_penalty * (1.0 - distinct / total) + 0.0  # + 0.0: no −0.0 for a clean text


@register_verifier("repetition")
class RepetitionVerifier(Verifier):
    """n-gram repetition penalty (module docstring). Options: ``ngram_size`` (default 3), ``max_penalty`` (≤ 0,
    default −1.0), ``unit`` ('words': lower-cased whitespace words, the default; 'tokens': token ids from
    completion_ids, for scripts without spaces), ``name``. ``stats``: ``repetitive`` (penalty < 0), ``clean``,
    ``too_short``, ``no_length``."""

    def __init__(self, *, ngram_size: int = 3, max_penalty: float = -1.0, unit: str = "words",
                 name: str | None = None):
        super().__init__(name=name)
        if not (isinstance(ngram_size, int) and ngram_size >= 1):
            raise ValueError(f"get_verifier('repetition'): ngram_size must be an integer ≥ 1, got {ngram_size!r}.")
        if not max_penalty <= 0:
            raise ValueError(f"get_verifier('repetition'): max_penalty must be ≤ 0 (a penalty), got {max_penalty!r}.")
        if unit not in ("words", "tokens"):
            raise ValueError(f"get_verifier('repetition'): unit={unit!r} is not valid; choose 'words' or 'tokens'.")
        self.ngram_size, self.max_penalty, self.unit = ngram_size, float(max_penalty), unit

    def score(self, completion: str, **row) -> float | None:
        if self.unit == "tokens":
            units = row.get("completion_ids")
            if not isinstance(units, (list, tuple)):
                self.stats["no_length"] += 1
                return None
            units = list(units)
        else:
            units = completion.lower().split()
        if len(units) < self.ngram_size:
            self.stats["too_short"] += 1
            return 0.0
        penalty = repetition_penalty(units, self.ngram_size, self.max_penalty)
        self.stats["repetitive" if penalty < 0 else "clean"] += 1
        return penalty


# ---- language consistency ---------------------------------------------------------------------------------------
LANGUAGE_SCRIPTS = {
    "en": ("Latin",), "fr": ("Latin",), "de": ("Latin",), "es": ("Latin",), "pt": ("Latin",), "it": ("Latin",),
    "vi": ("Latin",), "id": ("Latin",), "tr": ("Latin",), "pl": ("Latin",), "nl": ("Latin",),
    "zh": ("Han",), "ja": ("Han", "Hiragana", "Katakana"), "ko": ("Hangul", "Han"), "ru": ("Cyrillic",),
    "uk": ("Cyrillic",), "ar": ("Arabic",), "fa": ("Arabic",), "he": ("Hebrew",), "hi": ("Devanagari",),
    "el": ("Greek",), "th": ("Thai",), "bn": ("Bengali",), "ta": ("Tamil",),
}
# Prefixes of Unicode character names → script (a letter's name starts with its script: "LATIN SMALL LETTER A").
_NAME_PREFIX = {"CJK": "Han", "KANGXI": "Han", "IDEOGRAPHIC": "Han", "HALFWIDTH KATAKANA": "Katakana",
                "FULLWIDTH LATIN": "Latin"}
_SCRIPTS = ("Latin", "Han", "Hiragana", "Katakana", "Hangul", "Cyrillic", "Arabic", "Hebrew", "Devanagari", "Greek",
            "Thai", "Bengali", "Tamil", "Armenian", "Georgian", "Ethiopic")
_MATH_OR_CODE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+",
                           re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@lru_cache(maxsize=65536)
def _script(ch: str) -> str | None:
    """The script of a letter (from its Unicode name), 'Other' for a letter of an unlisted script, None otherwise."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    name = unicodedata.name(ch, "")
    for prefix, script in _NAME_PREFIX.items():
        if name.startswith(prefix):
            return script
    head = name.split(" ", 1)[0].capitalize()
    return head if head in _SCRIPTS else "Other"


def letter_scripts(text: str) -> dict[str, int]:
    """Count the letters of ``text`` by script."""
    counts: dict[str, int] = {}
    for ch in text:
        script = _script(ch)
        if script is not None:
            counts[script] = counts.get(script, 0) + 1
    return counts


def script_fraction(text: str, scripts: tuple[str, ...]) -> float | None:
    """Fraction of the letters of ``text`` (LaTeX and code removed) in ``scripts``; None when there is no letter."""
    counts = letter_scripts(_MATH_OR_CODE.sub(" ", text))
    total = sum(counts.values())
    if total == 0:
        return None
    return sum(counts.get(s, 0) for s in scripts) / total


@register_verifier("language")
class LanguageVerifier(Verifier):
    """Language consistency of the chain of thought, by script (module docstring). Options: ``target`` (a
    language code from ``LANGUAGE_SCRIPTS`` or a script name; or ``target_column``: a dataset column holding each
    row's target), ``name``. ``stats``: ``consistent`` (fraction 1), ``mixed``, ``no_letters``, ``no_target``."""

    def __init__(self, *, target: str | None = "en", target_column: str | None = None, name: str | None = None):
        super().__init__(name=name)
        if target is None and target_column is None:
            raise ValueError("get_verifier('language') needs target (e.g. 'en', 'zh', 'Latin') or target_column.")
        self.target, self.target_column = target, target_column
        if target_column is None:
            self.scripts = self.scripts_of(target)

    @staticmethod
    def scripts_of(target: str) -> tuple[str, ...]:
        if target in LANGUAGE_SCRIPTS:
            return LANGUAGE_SCRIPTS[target]
        if isinstance(target, str) and target.capitalize() in _SCRIPTS:
            return (target.capitalize(),)
        raise ValueError(f"get_verifier('language'): unknown target {target!r}; use a language code "
                         f"({', '.join(sorted(LANGUAGE_SCRIPTS))}) or a script ({', '.join(_SCRIPTS)}).")

    def score(self, completion: str, **row) -> float | None:
        if self.target_column is not None:
            target = row.get(self.target_column)
            if target is None:
                self.stats["no_target"] += 1
                return None
            scripts = self.scripts_of(target)
        else:
            scripts = self.scripts
        match = _THINK.search(completion)
        fraction = script_fraction(match.group(1) if match else completion, scripts)
        if fraction is None:
            self.stats["no_letters"] += 1
            return None
        self.stats["consistent" if fraction == 1.0 else "mixed"] += 1
        return fraction
