"""Prompt presets: each one fixes a whole evaluation protocol, not just a template.

A :class:`Preset` holds one :class:`Layout` per benchmark family (``gsm8k``; ``math`` for MATH and
MATH-500). A layout fixes the exemplars, how they are joined, the test item, the stop sequences,
the BOS rule and the default token budget. ``--max-new-tokens`` / ``max_new_tokens=`` overrides
only the budget.

Built-in presets (``list_presets()``; the exact strings are in the table of docs/evaluation.md):

* ``deepseek-fewshot``: DeepSeekMath's few-shot protocol (``evaluation/infer/run_cot_eval.py`` of
  ``deepseek-ai/DeepSeek-Math``). GSM8K: Wei et al.'s 8 exemplars, ``"Q: {question}\\nA: {answer}"``
  joined by ``"\\n\\n\\n"``, the test item ``"\\n\\n\\nQ: {q}\\nA:"``, stop ``"\\nQ:"``. MATH:
  Minerva's 4 exemplars, ``"Problem:\\n{problem}\\n\\nSolution:\\n{solution}"`` joined by
  ``"\\n\\n"``, stop ``"\\nProblem:"``. 1024 new tokens; EOS always stops.
* ``deepseek-chat``: DeepSeekMath-Instruct / RL's zero-shot prompt as plain text,
  ``"User: {q}\\nPlease reason step by step, and put your final answer within \\\\boxed{}.\\n\\nAssistant:"``.
* ``chat``: the model's own chat template around one user turn, the question followed by the
  boxed instruction.
* ``lm-eval-gsm8k-cot``: lm-evaluation-harness 0.4.13's ``gsm8k_cot`` layout: the same 8 exemplars
  joined by ``"\\n\\n"``, stops ``"Q:"``, ``"</s>"``, ``"<|im_end|>"``, 256 new tokens (HFLM's default).
* ``lm-eval-minerva``: lm-eval's ``minerva_math`` layout: ``"Problem:\\n{problem}\\n\\nSolution: {solution}"``
  joined by ``"\\n\\n"``, stop ``"Problem:"``, 256 new tokens. The exemplars are DeepSeekMath's
  copy of the 4 Minerva problems; lm-eval's own copy differs from it in whitespace (and the stray
  ``}``, see the assets README), so byte parity with lm-eval needs its copy as ``fewshot_file``
  (``benchmarks/parity_lm_eval.py`` exports it).
* Per-model entries: ``deepseek-math`` (DeepSeekMath-Instruct / RL through their chat template:
  the question, then the boxed instruction, in the user turn) and ``qwen2.5-math`` (Qwen2.5-Math's
  CoT prompt: the boxed instruction as the system turn, the bare question as the user turn).
* ``fewshot`` is an alias of ``deepseek-fewshot`` (the name of earlier releases).

**BOS rule** (``bos="auto"``, every built-in): the prompt text is tokenized with the tokenizer's
special tokens, so a BOS is added wherever the tokenizer adds one, *unless the text already starts
with the BOS string* (a chat template that writes it). That is what DeepSeekMath and lm-eval's
HFLM do. ``bos="never"`` tokenizes without special tokens. Both backends are fed these token ids.

Register your own: ``register_preset(Preset(name="mine", layouts={"gsm8k": Layout(...)}))``;
an existing name is refused unless ``overwrite=True``.

Not covered: multi-turn few-shot chat (exemplars as earlier turns), and lm-eval's
``fewshot_as_multiturn``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, Mapping

from .datasets import BenchmarkDataError

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

#: benchmark -> family (the key of ``Preset.layouts``)
FAMILY = {"gsm8k": "gsm8k", "math": "math", "math500": "math"}

#: field names of an exemplar row, per family: (question field, worked-answer field)
EXEMPLAR_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}


def asset_path(name: str) -> str:
    """Absolute path of a shipped exemplar file (``trl_grpo_plus/assets/prompts/<name>``)."""
    return str(resources.files("trl_grpo_plus").joinpath("assets", "prompts", name))


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Layout:
    """How one benchmark family is prompted.

    ``kind="text"``: the prompt is ``joiner.join(shots) + query_joiner + query`` (no
    ``query_joiner`` without shots). ``kind="chat"``: the tokenizer's chat template around
    ``system`` (optional) and the user turn ``query``. ``query`` uses ``{question}``; ``shot`` uses
    the exemplar row's fields (``{question}``/``{answer}`` for GSM8K, ``{problem}``/``{solution}``
    for MATH). ``exemplars``: a file name under ``assets/prompts`` or an absolute path; ``None`` =
    zero-shot. ``stop``: strings that end a completion (EOS always does).
    """

    kind: Literal["text", "chat"] = "text"
    query: str = "{question}"
    exemplars: str | None = None
    shot: str = ""
    joiner: str = ""
    query_joiner: str | None = None  # default: the same as ``joiner``
    system: str | None = None
    stop: tuple[str, ...] = ()
    bos: Literal["auto", "never"] = "auto"
    max_new_tokens: int = 1024

    def __post_init__(self):
        if self.kind not in ("text", "chat"):
            raise ValueError(f"Layout.kind={self.kind!r}: choose 'text' or 'chat'.")
        if self.bos not in ("auto", "never"):
            raise ValueError(f"Layout.bos={self.bos!r}: choose 'auto' (the tokenizer's rule) or 'never'.")
        if "{question}" not in self.query:
            raise ValueError(f"Layout.query={self.query!r} has no '{{question}}' placeholder for the test item.")
        if self.exemplars and not self.shot:
            raise ValueError(f"Layout(exemplars={self.exemplars!r}) needs shot=, the format of one exemplar.")
        if self.kind == "chat" and self.exemplars:
            raise ValueError("Layout(kind='chat') with exemplars is not supported: put few-shot text in a kind='text' layout.")
        if self.max_new_tokens < 1:
            raise ValueError(f"Layout.max_new_tokens={self.max_new_tokens}: must be >= 1.")


@dataclass(frozen=True)
class Preset:
    """A named protocol: one :class:`Layout` per family, plus where it comes from."""

    name: str
    layouts: Mapping[str, Layout]
    description: str = ""
    source: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def layout(self, benchmark: str) -> Layout:
        family = FAMILY.get(benchmark, benchmark)
        if family not in self.layouts:
            have = sorted(b for b, f in FAMILY.items() if f in self.layouts)
            raise BenchmarkDataError(
                f"Prompt preset {self.name!r} has no layout for {benchmark!r} (it covers: {', '.join(have)}). "
                f"Pick another --prompt (see `list_presets()` or docs/evaluation.md)."
            )
        return self.layouts[family]


_PRESETS: dict[str, Preset] = {}
_ALIASES: dict[str, str] = {}


def register_preset(preset: Preset, *, overwrite: bool = False) -> Preset:
    """Add ``preset`` to the registry (its ``aliases`` too). An existing name is refused unless
    ``overwrite=True``."""
    if not isinstance(preset, Preset):
        raise TypeError(f"register_preset expects a Preset, got {type(preset).__name__}.")
    for name in (preset.name, *preset.aliases):
        if not overwrite and (name in _PRESETS or name in _ALIASES):
            raise ValueError(f"A prompt preset named {name!r} is already registered; pass overwrite=True to replace it.")
    for family in preset.layouts:
        if family not in EXEMPLAR_FIELDS:
            raise ValueError(f"Preset {preset.name!r}: unknown family {family!r}; use 'gsm8k' or 'math'.")
    _PRESETS[preset.name] = preset
    for alias in preset.aliases:
        _ALIASES[alias] = preset.name
    return preset


def get_preset(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    key = _ALIASES.get(name, name)
    if key not in _PRESETS:
        raise BenchmarkDataError(f"Unknown prompt preset {name!r}. Choose one of: {', '.join(list_presets())}.")
    return _PRESETS[key]


def list_presets() -> list[str]:
    return list(_PRESETS) + list(_ALIASES)


# --------------------------------------------------------------------------------------------------
# built-ins

_DEEPSEEK = "deepseek-ai/DeepSeek-Math@b8b0f8c evaluation/ (run_cot_eval.py, few_shot_prompts/)"
_DEEPSEEK_CHAT = "User: {question}\n" + BOXED_INSTRUCTION + "\n\nAssistant:"

register_preset(Preset(
    name="deepseek-fewshot",
    aliases=("fewshot",),
    description="DeepSeekMath few-shot CoT for base models (GSM8K 8-shot, MATH Minerva 4-shot)",
    source=_DEEPSEEK,
    layouts={
        "gsm8k": Layout(exemplars="gsm8k_cot_8shot.jsonl", shot="Q: {question}\nA: {answer}", joiner="\n\n\n",
                        query="Q: {question}\nA:", stop=("\nQ:",)),
        "math": Layout(exemplars="minerva_math_4shot.jsonl", shot="Problem:\n{problem}\n\nSolution:\n{solution}",
                       joiner="\n\n", query="Problem:\n{question}\n\nSolution:", stop=("\nProblem:",)),
    },
))
register_preset(Preset(
    name="deepseek-chat",
    description="DeepSeekMath-Instruct/RL zero-shot CoT prompt, as plain text",
    source=_DEEPSEEK + ", DeepSeekMath paper Table 5",
    layouts={"gsm8k": Layout(query=_DEEPSEEK_CHAT), "math": Layout(query=_DEEPSEEK_CHAT)},
))
# the model's own chat template, the question and the boxed instruction in the user turn
_CHAT_LAYOUT = Layout(kind="chat", query="{question}\n" + BOXED_INSTRUCTION)
_CHAT_LAYOUTS = {"gsm8k": _CHAT_LAYOUT, "math": _CHAT_LAYOUT}
register_preset(Preset(
    name="chat",
    description="the model's chat template; user turn = question + boxed instruction",
    layouts=dict(_CHAT_LAYOUTS),
))
register_preset(Preset(
    name="lm-eval-gsm8k-cot",
    description="lm-evaluation-harness 0.4.13 gsm8k_cot (8-shot, '\\n\\n' between exemplars)",
    source="EleutherAI/lm-evaluation-harness 0.4.13 lm_eval/tasks/gsm8k/gsm8k-cot.yaml",
    layouts={"gsm8k": Layout(exemplars="gsm8k_cot_8shot.jsonl", shot="Q: {question}\nA: {answer}", joiner="\n\n",
                             query="Q: {question}\nA:", stop=("Q:", "</s>", "<|im_end|>"), max_new_tokens=256)},
))
register_preset(Preset(
    name="lm-eval-minerva",
    description="lm-evaluation-harness 0.4.13 minerva_math (4-shot, 'Solution: ' + solution)",
    source="EleutherAI/lm-evaluation-harness 0.4.13 lm_eval/tasks/minerva_math/",
    layouts={"math": Layout(exemplars="minerva_math_4shot.jsonl", shot="Problem:\n{problem}\n\nSolution: {solution}",
                            joiner="\n\n", query="Problem:\n{question}\n\nSolution:", stop=("Problem:",),
                            max_new_tokens=256)},
))
register_preset(Preset(
    name="deepseek-math",
    description="DeepSeekMath-Instruct / RL 7B through their chat template",
    source="deepseek-ai/DeepSeek-Math README (chat completion example)",
    layouts=dict(_CHAT_LAYOUTS),
))
register_preset(Preset(
    name="qwen2.5-math",
    description="Qwen2.5-Math(-Instruct) CoT: boxed instruction as the system turn",
    source="QwenLM/Qwen2.5-Math README (CoT prompt)",
    layouts={"gsm8k": Layout(kind="chat", system=BOXED_INSTRUCTION, query="{question}"),
             "math": Layout(kind="chat", system=BOXED_INSTRUCTION, query="{question}")},
))
