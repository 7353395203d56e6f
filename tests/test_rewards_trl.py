"""The verifiers as reward functions inside a real ``trl.GRPOTrainer`` training step (tiny model, CPU)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from trl_grpo_plus.rewards import _math_pool, combine, get_verifier

pytestmark = pytest.mark.slow

TIMEOUT_S = 0.5
ADVERSARIAL = [
    "\\boxed{9^{9^{9^9}}}",
    "\\boxed{" + "\\left(" * 40 + "1" + "\\right)" * 40 + "}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{\\frac{\\sqrt{}{{]]}",
    "∑ \x00 😀 \\boxed{½}",
    "y" * 1_000_000,
]


class AdversarialProbe:
    """A reward function that, while TRL runs it, also scores adversarial completions with the math
    verifier and records how long each verdict took and from which thread."""

    __name__ = "adversarial_probe"

    def __init__(self):
        self.math = get_verifier("math", timeout_s=TIMEOUT_S)
        self.records = []

    def __call__(self, prompts, completions, **kwargs):
        for bad in ADVERSARIAL:
            start = time.monotonic()
            scores = self.math(prompts=["p"], completions=[bad], answer=["2"])
            self.records.append((scores, time.monotonic() - start, threading.current_thread().name))
        return [0.0] * len(completions)


def test_verifiers_inside_a_grpo_training_step(tiny_model_dir, tmp_path):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    math = get_verifier("math", timeout_s=TIMEOUT_S)
    gated = combine(["math"], gate="format", name="math_if_formatted")
    probe = AdversarialProbe()
    data = Dataset.from_dict({
        "prompt": [f"What is {i} + {i}? Put the answer in \\boxed{{}}." for i in range(4)],
        "answer": [str(2 * i) for i in range(4)],
    })
    cfg = GRPOConfig(
        output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to=[], gradient_checkpointing=False,
        save_strategy="no", logging_steps=1, disable_tqdm=True, max_completion_length=12,
        num_generations=4, per_device_train_batch_size=4, max_steps=2, seed=0, learning_rate=1e-3,
    )
    trainer = GRPOTrainer(model=tiny_model_dir, reward_funcs=[math, gated, probe], args=cfg, train_dataset=data)
    # The pool's one-off start-up (a few seconds, begun in the background by the verifier's
    # constructor) is not a verdict latency: wait for it before timing verdicts.
    _math_pool.get_pool().start()
    trainer.train()

    # the verifiers were called by TRL on every generated completion, and scored them all
    assert math.stats["calls"] >= 2 and math.stats["samples"] >= 8
    assert math.stats["unscorable"] == 0
    assert math.stats["correct"] + math.stats["incorrect"] + math.stats["no_answer"] + math.stats["timeouts"] == math.stats["samples"]
    logged = [k for row in trainer.state.log_history for k in row]
    assert any("math_if_formatted" in k for k in logged) and any(k.startswith("rewards/math") for k in logged)
    # adversarial inputs inside the step: a verdict each, in time, never an exception
    assert len(probe.records) >= 2 * len(ADVERSARIAL)
    for scores, elapsed, _ in probe.records:
        assert scores == [0.0]
        assert elapsed <= TIMEOUT_S + 0.2
