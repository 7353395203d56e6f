"""Prompt presets: ``fewshot`` (base models) and ``chat`` (instruct / RL models).

``fewshot`` follows DeepSeekMath's protocol, with our own framing text and exemplars taken from the
benchmark's train split (first ``k``, fixed) or a user file:

* GSM8K, 8-shot::

      Q: <question>
      A: <reasoning> The answer is <N>.

      Q: <test question>
      A:

  Stop sequences: ``"\\nQ:"`` (the model starting the next exemplar) and ``"\\n\\n\\n"``.

* MATH, 4-shot, Minerva style::

      Problem:
      <problem>

      Solution:
      <solution>
      Final Answer: The final answer is $<answer>$. I hope it is correct.

      Problem:
      <test problem>

      Solution:

  Stop sequences: ``"\\nProblem:"`` and ``"I hope it is correct."`` (cut before the stop text, so
  the completion ends with ``Final Answer: The final answer is $X$.``).

``chat``: the model's own chat template (``add_generation_prompt=True``) around one user turn, the
question followed by ``"Please reason step by step, and put your final answer within \\boxed{}."``.
The only stop is the tokenizer's end-of-turn / EOS token, so no stop strings.

Not covered: system prompts (the template's default, if any, applies) and multi-turn exemplars in
chat form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .datasets import BenchmarkDataError, Example

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PRESETS = ("fewshot", "chat")

GSM8K_STOPS = ("\nQ:", "\n\n\n")
MATH_STOPS = ("\nProblem:", "I hope it is correct.")


@dataclass(frozen=True)
class PromptPreset:
    """A rendered preset: how to turn a question into model input, and where to stop."""

    name: str
    benchmark: str
    stop: tuple[str, ...]
    prefix: str = ""  # few-shot block (empty for chat)

    def render(self, question: str, tokenizer=None) -> str:
        if self.name == "chat":
            return render_chat(question, tokenizer)
        if self.benchmark == "gsm8k":
            return f"{self.prefix}Q: {question}\nA:"
        return f"{self.prefix}Problem:\n{question}\n\nSolution:"


def gsm8k_shot(ex: Example) -> str:
    return f"Q: {ex.question}\nA: {ex.solution} The answer is {ex.gold}.\n\n"


def math_shot(ex: Example) -> str:
    solution = (ex.solution or "").strip()
    return (
        f"Problem:\n{ex.question}\n\nSolution:\n{solution}\n"
        f"Final Answer: The final answer is ${ex.gold}$. I hope it is correct.\n\n"
    )


def chat_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": f"{question}\n{BOXED_INSTRUCTION}"}]


def render_chat(question: str, tokenizer) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise BenchmarkDataError(
            "The 'chat' prompt preset needs a tokenizer with a chat template; this one has none. "
            "Use --prompt fewshot for base models, or set tokenizer.chat_template."
        )
    return tokenizer.apply_chat_template(chat_messages(question), tokenize=False, add_generation_prompt=True)


def build_preset(benchmark: str, preset: str, fewshot: Sequence[Example] = ()) -> PromptPreset:
    """The preset ``preset`` for ``benchmark`` (``gsm8k``, ``math`` or ``math500``)."""
    if preset not in PRESETS:
        raise BenchmarkDataError(f"Unknown prompt preset {preset!r}. Choose one of: {', '.join(PRESETS)}.")
    if preset == "chat":
        return PromptPreset("chat", benchmark, stop=())
    if benchmark == "gsm8k":
        return PromptPreset("fewshot", benchmark, stop=GSM8K_STOPS, prefix="".join(gsm8k_shot(e) for e in fewshot))
    return PromptPreset("fewshot", benchmark, stop=MATH_STOPS, prefix="".join(math_shot(e) for e in fewshot))


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` before the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
