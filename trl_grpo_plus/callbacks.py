"""``BenchmarkCallback``: GSM8K / MATH accuracy during training, logged through ``report_to``.

It calls the same ``trl_grpo_plus.benchmarks.evaluate`` as ``trl-grpo-plus eval`` (same prompts, same
verifiers), on the policy being trained, every ``every_n_steps`` optimizer steps, and logs
``eval_<benchmark>/accuracy`` (plus the 95% interval bounds and the token throughput) through
``trainer.log`` so every ``report_to`` integration sees it. Under several processes each rank scores
a shard and the summary is gathered (all ranks must run it, which the callback does).

Not covered: DeepSpeed ZeRO-3 / FSDP with sharded parameters (generation needs the full weights;
evaluate after training with ``trl-grpo-plus eval`` instead) and the vLLM backend (generation here
uses the training model through transformers).
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


class BenchmarkCallback(TrainerCallback):
    """Evaluate on ``benchmark`` every ``every_n_steps`` steps (and at the end of training).

    ``GRPOPlusTrainer`` binds itself to this callback; with another trainer pass ``trainer=``.
    Extra keyword arguments go to ``trl_grpo_plus.benchmarks.evaluate`` (``prompt``, ``max_new_tokens``,
    ``rows``, ``to_example``, ``batch_size``, ...).
    """

    def __init__(self, benchmark: str = "gsm8k", every_n_steps: int = 100, limit: int | None = 100, *,
                 data_file: str | None = None, at_end: bool = True, trainer=None, **evaluate_kwargs):
        from .benchmarks.datasets import get_spec

        get_spec(benchmark)  # an unknown benchmark fails here, not mid-training
        if every_n_steps < 1:
            raise ValueError(f"BenchmarkCallback(every_n_steps={every_n_steps}): must be >= 1.")
        self.benchmark = benchmark
        self.every_n_steps = every_n_steps
        self.limit = limit
        self.data_file = data_file
        self.at_end = at_end
        self.evaluate_kwargs = evaluate_kwargs
        self.trainer = trainer
        self.history: list[dict] = []
        self._last_step = None

    def bind_trainer(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("BenchmarkCallback needs the trainer to log through report_to: use GRPOPlusTrainer "
                               "(which binds it) or pass BenchmarkCallback(..., trainer=trainer).")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_n_steps == 0:
            self.run(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.at_end and self._last_step != state.global_step:
            self.run(state.global_step)

    def run(self, step: int) -> dict:
        """Evaluate the current policy now and log the metrics; returns them."""
        from .benchmarks import evaluate

        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            summary = evaluate(self.benchmark, model=model, tokenizer=trainer.processing_class, limit=self.limit,
                               data_file=self.data_file, progress=False, **self.evaluate_kwargs)
        finally:
            model.train(was_training)
        prefix = f"eval_{self.benchmark}"
        metrics = {f"{prefix}/accuracy": summary["accuracy"]}
        low, high = summary["accuracy_ci95"]
        metrics[f"{prefix}/accuracy_ci95_low"], metrics[f"{prefix}/accuracy_ci95_high"] = low, high
        tokens_per_second = summary.get("throughput", {}).get("tokens_per_second")
        if tokens_per_second is not None:
            metrics[f"{prefix}/tokens_per_second"] = tokens_per_second
        self._last_step = step
        self.history.append({"step": step, **metrics})
        trainer.log(metrics)
        return metrics
