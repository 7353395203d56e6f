"""The one place that touches TRL's private names, and the check of the tested TRL range.

Everything ``GRPOPlusTrainer`` needs from TRL's internals goes through here:

- ``GRPOTrainerHooks`` overrides TRL's private hooks (``_calculate_rewards``, ``_generate_and_score_completions``
  (split into ``_plus_before_generation``, ``_plus_generate`` → ``generate_and_score`` → ``_plus_after_generation``),
  ``_prepare_inputs``, ``_compute_loss``, ``_save_checkpoint``, ``_load_optimizer_and_scheduler``) and forwards each
  one to a named hook of ours (``_plus_*``), so that the trainer module never spells a TRL private name;
- small accessors read or write TRL's private state (``_metrics``, ``_logs``, ``_step``, ``_buffered_inputs``,
  ``_get_per_token_logps_and_entropies``);
- helpers from ``trl.trainer.utils`` / ``trl.trainer.callbacks`` are re-exported from here.

When TRL changes one of these names, this module is the only one to edit. The tested range is ``TESTED_TRL``;
importing this module with a TRL outside it raises ``ImportError`` (set ``TRL_GRPO_PLUS_ALLOW_UNTESTED_TRL=1`` to
downgrade that to a warning and try anyway).
"""

from __future__ import annotations

import os
import warnings

from packaging.version import InvalidVersion, Version

TESTED_TRL = (Version("1.16"), Version("1.17"))  # [low, high)
ALLOW_ENV = "TRL_GRPO_PLUS_ALLOW_UNTESTED_TRL"


def check_trl_version(installed: str | None = None) -> None:
    """Raise ImportError (or warn, with TRL_GRPO_PLUS_ALLOW_UNTESTED_TRL=1) when TRL is outside the tested range."""
    if installed is None:
        import trl

        installed = trl.__version__
    low, high = TESTED_TRL
    try:
        ok = low <= Version(installed) < high
    except InvalidVersion:
        ok = False
    if ok:
        return
    message = (
        f"trl-grpo-plus is tested with trl>={low},<{high} but trl {installed} is installed. GRPOPlusTrainer overrides "
        f"private hooks of trl.GRPOTrainer that change between TRL releases, so it may silently compute a different "
        f'objective. To proceed, either install a tested TRL: `pip install "trl>={low},<{high}"` (pip keeps or moves '
        f"transformers, accelerate, peft and datasets to versions that TRL accepts); or upgrade trl-grpo-plus to a "
        f"release tested with trl {installed}: `pip install -U trl-grpo-plus`; or set {ALLOW_ENV}=1 to try anyway "
        f"(a warning instead of this error), then run the TRL-equivalence tests of a source checkout "
        f"(`python -m pytest tests/test_trainer_trl_equivalence.py`) before trusting the results."
    )
    if os.environ.get(ALLOW_ENV, "0") == "1":
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return
    raise ImportError(message)


check_trl_version()

# ruff: noqa: E402  (the imports below must come after the version check)
import torch
from accelerate.utils import gather_object, is_peft_model
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.callbacks import SyncRefModelCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.trainer.utils import (
    nanmax,
    nanmin,
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

__all__ = [
    "GRPOConfig",
    "GRPOTrainer",
    "GRPOTrainerHooks",
    "SyncRefModelCallback",
    "TESTED_TRL",
    "check_trl_version",
    "gather_object",
    "is_peft_model",
    "nanmax",
    "nanmin",
    "reshuffle_buffer",
]


def _merge_chunks(chunks: list[dict]) -> dict:
    """Inverse of ``split_tensor_dict``: concatenate the per-step chunks of one generation batch."""
    merged = {}
    for key, first in chunks[0].items():
        if first is None:
            merged[key] = None
        elif isinstance(first, torch.Tensor) and first.dim() == 0:
            merged[key] = first  # scalars (e.g. num_items_in_batch) are shared by every chunk
        elif isinstance(first, torch.Tensor):
            merged[key] = torch.cat([chunk[key] for chunk in chunks], dim=0)
        else:
            merged[key] = [item for chunk in chunks for item in chunk[key]]
    return merged


def reshuffle_buffer(chunks: list[dict]) -> list[dict]:
    """Re-draw the mini-batches of a buffered generation batch: merge, shuffle samples, split again (TRL's pipeline)."""
    batch = split_pixel_values_by_grid(_merge_chunks(chunks))
    batch = shuffle_sequence_dict(batch)
    return [unsplit_pixel_values_by_grid(chunk) for chunk in split_tensor_dict(batch, len(chunks))]


class GRPOTrainerHooks(GRPOTrainer):
    """``trl.GRPOTrainer`` with its private hooks forwarded to named ``_plus_*`` hooks (defaults: TRL's behaviour)."""

    _plus_rewards_per_func = None
    completions_scored: tuple | None = None  # (completions, completion_ids) of the last reward call, this process

    # ---- TRL private hooks -> our hooks -------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self.completions_scored = (completions, completion_ids_list)  # local, for step rewards (process supervision)
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._plus_rewards_per_func = rewards_per_func  # gathered over processes: [N_global, n_funcs]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._plus_before_generation()
        return self._plus_generate(inputs)

    def generate_and_score(self, inputs: list[dict]) -> dict:
        """One round of TRL's generation and scoring of ``inputs`` (local rows), then our after-generation hook."""
        batch = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._plus_rewards_per_func = self._plus_rewards_per_func, None
        return self._plus_after_generation(batch, rewards_per_func)

    def _prepare_inputs(self, generation_batch):
        if self.model.training and self._buffered_inputs is not None:
            spg = self.args.steps_per_generation
            generate_every = spg * self.num_iterations
            # The first micro-step of epochs 2..μ of a buffered generation batch.
            if self._step % spg == 0 and self._step % generate_every != 0 and self._plus_reshuffle_epochs():
                self._buffered_inputs = reshuffle_buffer(self._buffered_inputs)
        return super()._prepare_inputs(generation_batch)

    def _compute_loss(self, model, inputs):
        return self._plus_loss(model, inputs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._plus_save_state(os.path.join(self._get_output_dir(trial=trial), folder))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self._plus_load_state(checkpoint)

    def save_checkpoint(self) -> str:
        """Write a full resumable checkpoint of the current step now (model, optimizer, scheduler, RNG, trainer state
        and our own state), as the ``save_steps`` schedule would; returns its folder. Every process must call it."""
        self._save_checkpoint(self.model_wrapped, trial=None)
        return os.path.join(self._get_output_dir(trial=None), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    # ---- defaults of our hooks (TRL's behaviour) ----------------------------------------------------------------
    def _plus_before_generation(self) -> None:
        pass

    def _plus_generate(self, inputs: list[dict]) -> dict:
        return self.generate_and_score(inputs)

    def _plus_after_generation(self, batch: dict, rewards_per_func: torch.Tensor) -> dict:
        return batch

    def _plus_reshuffle_epochs(self) -> bool:
        return False

    def _plus_loss(self, model, inputs):
        return self.trl_loss(model, inputs)

    def _plus_save_state(self, checkpoint_dir: str) -> None:
        pass

    def _plus_load_state(self, checkpoint_dir: str) -> None:
        pass

    # ---- accessors to TRL private state -------------------------------------------------------------------------
    def trl_loss(self, model, inputs):
        """TRL's own loss (k3 KL), used for the loss types GRPOPlusTrainer does not rewrite."""
        return super()._compute_loss(model, inputs)

    def per_token_logps(self, model, inputs: dict, compute_entropy: bool = False, compute_aux_loss: bool = False):
        """(log-probs [B, T], entropies [B, T] | None, aux loss | None) of the completion tokens of ``inputs``."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        extra = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
                 "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")
        return self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, inputs["completion_ids"].size(1), compute_entropy=compute_entropy,
            compute_aux_loss=compute_aux_loss, **{key: inputs.get(key) for key in extra},
        )

    def log_metric(self, mode: str, name: str, value: float) -> None:
        """Append a value to TRL's metric buffer; TRL averages it over the logging window."""
        self._metrics[mode][name].append(value)

    def replace_logged_advantages(self, advantages: list[float]) -> None:
        """Replace the advantages TRL just logged for the completions table by ours (same order)."""
        logged = self._logs["advantages"]
        n = min(len(advantages), len(logged))
        for _ in range(n):
            logged.pop()
        logged.extend(advantages[len(advantages) - n :])

    @property
    def generation_batches_buffered(self) -> bool:
        return self._buffered_inputs is not None
