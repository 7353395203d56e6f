"""Training callbacks: ``BenchmarkCallback`` (benchmark accuracy during training) and ``CompactProgressCallback``.

``BenchmarkCallback``: GSM8K / MATH accuracy during training, logged through ``report_to``.

It calls the same ``trl_grpo_plus.benchmarks.evaluate`` as ``trl-grpo-plus eval`` (same prompts, same
verifiers), on the policy being trained, every ``every_n_steps`` optimizer steps, and logs
``eval_<benchmark>/accuracy`` (plus the 95% interval bounds and the token throughput) through
``trainer.log`` so every ``report_to`` integration sees it. Under several processes each rank scores
a shard and the summary is gathered (all ranks must run it, which the callback does).

Not covered: DeepSpeed ZeRO-3 / FSDP with sharded parameters (generation needs the full weights;
evaluate after training with ``trl-grpo-plus eval`` instead) and the vLLM backend (generation here
uses the training model through transformers).

``CompactProgressCallback``: one console line per logging step (step, reward mean by verifier, KL, loss,
s/step, ETA) in place of the raw metrics dict that transformers prints; ``report_to`` still gets every key.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

logger = logging.getLogger(__name__)


class BenchmarkCallback(TrainerCallback):
    """Evaluate on ``benchmark`` every ``every_n_steps`` steps (and at the end of training).

    ``GRPOPlusTrainer`` binds itself to this callback; with another trainer pass ``trainer=``.
    Extra keyword arguments go to ``trl_grpo_plus.benchmarks.evaluate`` (``prompt``, ``max_new_tokens``,
    ``rows``, ``to_example``, ``batch_size``, ...).
    """

    def __init__(self, benchmark: str = "gsm8k", every_n_steps: int = 100, limit: int | None = 100, *,
                 data_file: str | None = None, at_end: bool = True, trainer=None, progress: bool = True,
                 **evaluate_kwargs):
        from .benchmarks.datasets import get_spec

        get_spec(benchmark)  # an unknown benchmark fails here, not mid-training
        if every_n_steps < 1:
            raise ValueError(f"BenchmarkCallback(every_n_steps={every_n_steps}): must be >= 1.")
        self.benchmark = benchmark
        self.every_n_steps = every_n_steps
        self.limit = limit
        self.data_file = data_file
        self.at_end = at_end
        self.progress = progress
        self.evaluate_kwargs = evaluate_kwargs
        self.trainer = trainer
        self._examples = None
        self.history: list[dict] = []
        self._last_step = None

    def bind_trainer(self, trainer) -> None:
        self.trainer = trainer

    def load_problems(self) -> list:
        """The problems every evaluation of this run scores, loaded once (``data_file``, ``rows=`` or the hub).

        Called before training starts (by ``trl-grpo-plus train`` before the model loads, else at train begin),
        so a missing file or an offline hub fails then, not at the first evaluation. Raises
        ``trl_grpo_plus.benchmarks.datasets.BenchmarkDataError``.
        """
        if self._examples is None:
            from .benchmarks.datasets import load_examples

            self._examples = load_examples(self.benchmark, data_file=self.data_file, limit=self.limit,
                                           rows=self.evaluate_kwargs.get("rows"),
                                           to_example=self.evaluate_kwargs.get("to_example"))
        return self._examples

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise RuntimeError("BenchmarkCallback needs the trainer to log through report_to: use GRPOPlusTrainer "
                               "(which binds it) or pass BenchmarkCallback(..., trainer=trainer).")
        self.load_problems()

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
        kwargs = {k: v for k, v in self.evaluate_kwargs.items() if k not in ("rows", "to_example")}
        try:
            # a tqdm bar per problem on the main process (the runner's), so a long evaluation does not look frozen
            summary = evaluate(self.benchmark, model=model, tokenizer=trainer.processing_class,
                               rows=self.load_problems(), progress=self.progress, **kwargs)
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


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def compact_log_line(logs: dict, step: int, max_steps: int, seconds_per_step: float | None) -> str | None:
    """``step 12/200 | reward 0.530 (math 0.410, format 0.950) | kl 0.0012 | loss 0.0034 | 1.52 s/step | ETA 4m43s``.

    None for a log without training metrics (e.g. the final ``train_runtime`` summary, which is printed as is).
    Evaluation metrics (``eval_*``) get their own line.
    """
    evals = {k: v for k, v in logs.items() if k.startswith("eval_") and isinstance(v, (int, float))}
    if evals:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in evals.items() if not k.endswith(("_low", "_high")))
        return f"step {step}/{max_steps} | {shown}"
    if "loss" not in logs and "reward" not in logs:
        return None
    parts = [f"step {step}/{max_steps}"]
    if "reward" in logs:
        by_verifier = [(k.split("/")[1], v) for k, v in logs.items()
                       if k.startswith("rewards/") and k.endswith("/mean") and k.count("/") == 2]
        detail = f" ({', '.join(f'{name} {v:.3f}' for name, v in by_verifier)})" if by_verifier else ""
        parts.append(f"reward {logs['reward']:.3f}{detail}")
    if "kl" in logs:
        parts.append(f"kl {logs['kl']:.4g}")
    if "loss" in logs:
        parts.append(f"loss {logs['loss']:.4g}")
    if seconds_per_step is not None:
        parts.append(f"{seconds_per_step:.2f} s/step")
        parts.append(f"ETA {_format_duration(max(0, max_steps - step) * seconds_per_step)}")
    return " | ".join(parts)


class CompactProgressCallback(ProgressCallback):
    """transformers' progress bar, with one compact line per logging step instead of the raw metrics dict.

    ``s/step`` is the wall time since the previous logged step divided by the steps in between (so it includes
    generation, reward scoring and any in-training evaluation); ETA is that rate times the steps left.
    ``report_to`` integrations are separate callbacks and still receive every key.
    """

    def __init__(self, bar: bool = True):
        super().__init__()
        self.bar = bar
        self._last = None  # (time, step)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bar:
            super().on_train_begin(args, state, control, **kwargs)
        self._last = (time.monotonic(), state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar:
            super().on_step_end(args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar:
            super().on_train_end(args, state, control, **kwargs)

    def close_bar(self) -> None:
        """Close the progress bar now (a run that stops on an error never reaches on_train_end)."""
        if self.training_bar is not None:
            self.training_bar.close()
            self.training_bar = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now, step = time.monotonic(), state.global_step
        rate = None
        if self._last is not None and step > self._last[1]:
            rate = (now - self._last[0]) / (step - self._last[1])
        line = compact_log_line(logs, step, state.max_steps, rate)
        if line is None:
            line = str({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in logs.items() if k != "total_flos"})
        elif "loss" in logs or "reward" in logs:
            self._last = (now, step)
        if self.training_bar is not None:
            self.training_bar.write(line)
        else:
            print(line, flush=True)


def use_compact_progress(trainer) -> CompactProgressCallback:
    """Swap transformers' ProgressCallback / PrinterCallback on ``trainer`` for a ``CompactProgressCallback``."""
    handler = trainer.callback_handler
    bar = not any(isinstance(cb, PrinterCallback) for cb in handler.callbacks)
    for cls in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cls)
    callback = CompactProgressCallback(bar=bar)
    trainer.add_callback(callback)
    return callback
