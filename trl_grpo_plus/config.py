"""``GRPOPlusConfig``: TRL's ``GRPOConfig`` plus the choices TRL fixes, each documented with its formula.

New fields (see docs/trainer.md for the full reference):

    std_estimator            Â_i = (r_i − mean_g(r)) / (σ + ε),  σ with ÷(n−1) "sample" or ÷n "population"
    advantage_epsilon        the ε above (TRL hard-codes 1e-4)
    kl_estimator, kl_clamp   β·clamp(k_j(Δ), −c, c) added per token, Δ = log π_ref − log π_θ
    shuffle_each_iteration   re-draw the mini-batches in each of the μ epochs over one generation batch
    ref_refresh_steps        π_ref ← π_θ every N generation batches, at a generation boundary

TRL fields keep their meaning: ``scale_rewards`` (group / batch / none), ``loss_type`` (grpo = sequence mean,
bnpo / dapo = token mean, dr_grpo = constant normaliser), ``num_iterations`` (μ), ``beta``, ``epsilon``,
``epsilon_high``. ``__post_init__`` rejects settings that contradict each other and says what to change.
"""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from . import _trl_compat
from .algos.aggregation import MODE_FOR_LOSS_TYPE

STD_ESTIMATORS = ("sample", "population")
KL_ESTIMATORS = ("k1", "k2", "k3")
SCALE_REWARDS = ("group", "batch", "none")
# Loss types whose loss GRPOPlusTrainer computes itself (clipped surrogate + selectable KL), and TRL's others,
# which it leaves to TRL (advantages still come from trl_grpo_plus.algos; the KL there is TRL's unclamped k3).
OWN_LOSS_TYPES = tuple(MODE_FOR_LOSS_TYPE)
TRL_LOSS_TYPES = ("cispo", "sapo", "luspo", "vespo")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")
DEFAULT_ADVANTAGE_EPSILON = 1e-4


def _one_of(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(repr(v) for v in valid)}.")


# init/repr/eq=False: the dunders below reuse TRL's generated __init__ and walk fields() at call time. Letting
# dataclasses generate a second ~250-field __init__, __repr__ and __eq__ costs ~2 MB of resident memory for good
# (the source it compiles); fields(), asdict(), replace() and HfArgumentParser / TrlParser are unaffected.
@dataclass(init=False, repr=False, eq=False)
class GRPOPlusConfig(_trl_compat.GRPOConfig):
    r"""TRL's ``GRPOConfig`` with every GRPO choice explicit. All TRL fields keep their meaning and defaults.

    Use ``GRPOPlusConfig.deepseekmath(output_dir=..., **overrides)`` for the DeepSeekMath paper's settings.
    ``objective_formula()`` renders the objective in effect, with the chosen values.
    """

    std_estimator: Literal["sample", "population"] | None = field(
        default=None,
        metadata={
            "help": "Standard deviation used to scale group-relative advantages when `scale_rewards` is 'group' or "
            "'batch': Â_i = (r_i − mean_group(r)) / (σ + advantage_epsilon). 'sample': σ = sqrt(Σ_j (r_j − r̄)² / "
            "(n − 1)) (Bessel; TRL's choice). 'population': σ = sqrt(Σ_j (r_j − r̄)² / n). Unset means 'sample'. "
            "n counts the non-NaN rewards. Must stay unset when scale_rewards='none'."
        },
    )
    advantage_epsilon: float = field(
        default=DEFAULT_ADVANTAGE_EPSILON,
        metadata={
            "help": "ε in Â_i = (r_i − mean_group(r)) / (σ + ε), guarding the division for low-variance groups. TRL "
            "hard-codes 1e-4. A group whose rewards are all equal gets Â = 0 exactly, whatever ε."
        },
    )
    kl_estimator: Literal["k1", "k2", "k3"] = field(
        default="k3",
        metadata={
            "help": "Per-token estimator of KL(π_θ ‖ π_ref), with Δ = log π_ref − log π_θ: 'k1' = −Δ, 'k2' = ½Δ², "
            "'k3' = exp(Δ) − Δ − 1 (DeepSeekMath eq. 4; TRL's only choice). β·KL_t is added to each token's loss and "
            "aggregated like the policy term (see `loss_type`)."
        },
    )
    kl_clamp: float | None = field(
        default=None,
        metadata={
            "help": "If set to c > 0, each per-token KL estimate is clamped before weighting: KL_t ← clamp(KL_t, −c, "
            "c). Only the upper bound can bind for k2 and k3. Unset: no clamp."
        },
    )
    shuffle_each_iteration: bool = field(
        default=False,
        metadata={
            "help": "With num_iterations μ > 1: at the start of each of the μ epochs over a generation batch, permute "
            "its samples and split them again into steps_per_generation mini-batches. False (TRL's behaviour): "
            "shuffle once per generation batch and replay the same mini-batches in every epoch."
        },
    )
    ref_refresh_steps: int | None = field(
        default=None,
        metadata={
            "help": "π_ref ← π_θ every N generation batches, at a generation boundary: before generation batch k·N "
            "(k ≥ 1) is scored, so the reference log-probs of that batch and later ones come from the refreshed "
            "reference (never from buffered ones). Requires beta > 0. With PEFT the reference is a frozen copy of "
            "the adapter, overwritten at each refresh. Unset: π_ref stays the initial policy."
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Our fields first: TRL's __init__ ends by calling __post_init__, which checks them.
        for name in PLUS_FIELDS:
            setattr(self, name, kwargs.pop(name, getattr(type(self), name)))
        try:
            super().__init__(*args, **kwargs)
        except TypeError as error:
            raise TypeError(str(error).replace(f"{_trl_compat.GRPOConfig.__qualname__}.__init__()",
                                               f"{type(self).__name__}()")) from None

    def __repr__(self) -> str:
        return str(self)  # TrainingArguments.__str__: every field, sorted, with *_token values masked

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    def __post_init__(self):
        self._check_plus_fields()
        try:
            super().__post_init__()
        except ValueError as error:
            raise _explain_trl_error(error, self) from error
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.world_size == 1:
            raise ValueError(
                f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate joined none of them, so "
                "each would train alone on its own groups. On CPU set use_cpu=True (accelerate only forms a "
                "multi-CPU group then); note that `accelerate launch --cpu` starts a single process."
            )
        if self.shuffle_each_iteration and self.num_iterations == 1:
            warnings.warn(
                "shuffle_each_iteration=True has no effect with num_iterations=1 (one epoch per generation batch); "
                "set num_iterations > 1 or drop it.",
                UserWarning,
                stacklevel=3,
            )

    @property
    def resolved_std_estimator(self) -> str:
        """The std actually used: 'none' when scale_rewards='none', else std_estimator (unset → 'sample')."""
        if self.scale_rewards == "none":
            return "none"
        return self.std_estimator or "sample"

    def _check_plus_fields(self) -> None:
        """Validate the new fields and their interplay with TRL's, naming the fix in each error."""
        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        _one_of("scale_rewards", scale, SCALE_REWARDS)
        _one_of("loss_type", self.loss_type, OWN_LOSS_TYPES + TRL_LOSS_TYPES)
        _one_of("multi_objective_aggregation", self.multi_objective_aggregation, AGGREGATIONS)
        _one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.std_estimator is not None:
            _one_of("std_estimator", self.std_estimator, STD_ESTIMATORS)
            if scale == "none":
                raise ValueError(
                    f"std_estimator={self.std_estimator!r} has no effect with scale_rewards='none' (advantages are "
                    "not divided by a std). Drop std_estimator, or set scale_rewards='group' or 'batch'."
                )
        if not (isinstance(self.advantage_epsilon, (int, float)) and self.advantage_epsilon >= 0):
            raise ValueError(f"advantage_epsilon must be a number ≥ 0, got {self.advantage_epsilon!r}.")
        if scale == "none" and self.advantage_epsilon != DEFAULT_ADVANTAGE_EPSILON:
            raise ValueError(
                "advantage_epsilon has no effect with scale_rewards='none' (no division by σ + ε). Drop "
                "advantage_epsilon, or set scale_rewards='group' or 'batch'."
            )
        if self.num_generations is None or self.num_generations < 2:
            raise ValueError(
                f"num_generations (G) is {self.num_generations}, but group-relative advantages need G ≥ 2 "
                "completions per prompt. Set num_generations to 2 or more (DeepSeekMath uses 64)."
            )
        if self.loss_type == "dr_grpo" and not self.max_completion_length:
            raise ValueError("loss_type='dr_grpo' divides by G·L_max with L_max = max_completion_length, which is "
                             "unset. Set max_completion_length, or pick loss_type 'grpo', 'bnpo' or 'dapo'.")
        self._check_kl_fields()
        self._check_refresh_fields()

    def _check_kl_fields(self) -> None:
        if self.kl_clamp is not None:
            if not (isinstance(self.kl_clamp, (int, float)) and self.kl_clamp > 0):
                raise ValueError(f"kl_clamp must be a positive number or None, got {self.kl_clamp!r}.")
            if self.beta == 0.0:
                raise ValueError("kl_clamp has no effect with beta=0 (no KL term). Set beta > 0, or drop kl_clamp.")
        custom_kl = self.kl_estimator != "k3" or self.kl_clamp is not None
        if custom_kl and self.loss_type in TRL_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is computed by TRL itself, whose KL is the unclamped k3. Set "
                "kl_estimator='k3' and kl_clamp=None, or pick a clipped-surrogate loss_type: "
                f"{', '.join(OWN_LOSS_TYPES)}."
            )
        if custom_kl and self.use_adaptive_entropy:
            raise ValueError(
                "use_adaptive_entropy=True is computed by TRL's own loss, whose KL is the unclamped k3. Set "
                "kl_estimator='k3' and kl_clamp=None, or turn use_adaptive_entropy off (a fixed entropy_coef works)."
            )

    def _check_refresh_fields(self) -> None:
        if self.ref_refresh_steps is None:
            return
        if not (isinstance(self.ref_refresh_steps, int) and self.ref_refresh_steps >= 1):
            raise ValueError(f"ref_refresh_steps must be a positive integer or None, got {self.ref_refresh_steps!r}.")
        if self.beta == 0.0:
            raise ValueError(
                "ref_refresh_steps is set but beta=0, so there is no reference model to refresh. Set beta > 0 "
                "(DeepSeekMath uses 0.04), or drop ref_refresh_steps."
            )
        if self.sync_ref_model:
            raise ValueError(
                "ref_refresh_steps and sync_ref_model=True both update the reference model. Use one: drop "
                "ref_refresh_steps (TR-DPO style soft sync every ref_model_sync_steps optimizer steps) or set "
                "sync_ref_model=False (hard refresh on a generation boundary)."
            )

    @classmethod
    def deepseekmath(cls, **overrides: Any) -> GRPOPlusConfig:
        """The DeepSeekMath GRPO preset (Shao et al. 2024, §4.2), with ``overrides`` applied on top.

        β = 0.04 with the k3 estimator; loss_type 'grpo' (1/G Σ_i 1/|o_i| Σ_t); group std (sample, ε = 1e-4);
        G = 64 completions per prompt; μ = 1 (one policy update per exploration stage); learning rate 1e-6;
        max completion length 1024; the KL term is not weighted by ρ (TRL's default use_bias_correction_kl=True
        is DeepSeek-V3.2's correction, not DeepSeekMath's objective). The paper's training batch of 1024
        completions (16 prompts × 64) depends on your hardware: set per_device_train_batch_size × processes ×
        steps_per_generation (or generation_batch_size) so that it is a multiple of 64. The paper does not state
        the clip ε; TRL's 0.2 is kept.
        """
        preset: dict[str, Any] = dict(
            beta=0.04,
            kl_estimator="k3",
            kl_clamp=None,
            loss_type="grpo",
            scale_rewards="group",
            num_generations=64,
            num_iterations=1,
            learning_rate=1e-6,
            max_completion_length=1024,
            epsilon=0.2,
            use_bias_correction_kl=False,
        )
        preset.update(overrides)
        return cls(**preset)

    def objective_formula(self) -> str:
        """The objective in effect, as readable text with the chosen values (logged once by the trainer)."""
        return _render_objective(self)


PLUS_FIELDS = tuple(GRPOPlusConfig.__annotations__)  # the fields declared in the class body above, in order


def _plus_signature() -> inspect.Signature:
    """TRL's __init__ signature plus our fields as keyword-only parameters (for help() and IDEs)."""
    trl_params = list(inspect.signature(_trl_compat.GRPOConfig.__init__).parameters.values())
    ours = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(GRPOPlusConfig, name),
                              annotation=GRPOPlusConfig.__annotations__[name]) for name in PLUS_FIELDS]
    return inspect.Signature(trl_params + ours)


GRPOPlusConfig.__init__.__signature__ = _plus_signature()


def _explain_trl_error(error: ValueError, cfg: GRPOPlusConfig) -> ValueError:
    """Add the fix to TRL / transformers errors that are common with GRPO on a new machine."""
    text = str(error)
    if "bf16" in text:
        return ValueError(
            f"{text}\nGRPOConfig turns bf16 on by default (bf16=None → True), and no bf16-capable accelerator was "
            "found. On CPU, pass bf16=False (full fp32) or use_cpu=True (bf16 autocast on CPU)."
        )
    if "must be divisible by num_generations" in text:
        return ValueError(
            f"{text}\nEach generation batch must hold whole groups of num_generations={cfg.num_generations} "
            "completions. Make per_device_train_batch_size × processes × steps_per_generation (or "
            "generation_batch_size) a multiple of num_generations, or lower num_generations."
        )
    return error


_AGGREGATION_TEXT = {  # (formula, note)
    "grpo": ("1/G Σ_i 1/|o_i| Σ_t", "sequence mean, DeepSeekMath"),
    "bnpo": ("1/Σ_i|o_i| Σ_i Σ_t", "token mean over the local micro-batch"),
    "dapo": ("1/Σ_i|o_i| Σ_i Σ_t", "token mean over the whole accumulated batch, all processes (DAPO)"),
    "dr_grpo": ("1/(G·L_max) Σ_i Σ_t", "constant normaliser, L_max = max_completion_length = {L} (Dr. GRPO)"),
}
_KL_TEXT = {"k1": "−Δ", "k2": "½Δ²", "k3": "exp(Δ) − Δ − 1"}


def _render_objective(cfg: GRPOPlusConfig) -> str:
    eps_low = cfg.epsilon
    eps_high = cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon
    std = cfg.resolved_std_estimator
    scope = "group" if cfg.scale_rewards == "group" else "batch"
    if std == "none":
        adv = "Â_i = r_i − mean_group(r)"
    else:
        adv = f"Â_i = (r_i − mean_group(r)) / (std_{std},{scope}(r) + {cfg.advantage_epsilon:g})"
    if cfg.multi_objective_aggregation == "normalize_then_sum":
        adv += "   (per reward function, then weighted sum, then batch-normalised)"
    lines = []
    if cfg.loss_type in OWN_LOSS_TYPES:
        agg, note = _AGGREGATION_TEXT[cfg.loss_type]
        weight = "ρ_it·" if cfg.use_bias_correction_kl else ""
        kl_term = f" − {cfg.beta:g}·{weight}KL_it" if cfg.beta != 0 else ""
        lines.append(f"L(θ) = −{agg} [ min(ρ_it·Â_i, clip(ρ_it, {1 - eps_low:g}, {1 + eps_high:g})·Â_i){kl_term} ]")
        lines.append(f"loss_type={cfg.loss_type!r}: {note.format(L=cfg.max_completion_length)}")
    else:
        lines.append(f"loss_type={cfg.loss_type!r}: TRL's own loss (see the TRL docs), with the advantages below")
    rho = "exp(mean_t log π_θ/π_old) per sequence" if cfg.importance_sampling_level == "sequence" else \
        "π_θ(o_it)/π_old(o_it)"
    lines.append(f"ρ_it = {rho};  G = {cfg.num_generations};  μ = {cfg.num_iterations}"
                 + ("  (mini-batches re-drawn every epoch)" if cfg.shuffle_each_iteration and cfg.num_iterations > 1
                    else ""))
    lines.append(adv + "   [NaN rewards excluded; all-equal group → 0]")
    if cfg.beta != 0:
        est = cfg.kl_estimator if cfg.loss_type in OWN_LOSS_TYPES else "k3"
        clamp = f", clamped to ±{cfg.kl_clamp:g}" if cfg.kl_clamp is not None else ""
        lines.append(f"KL_it = {est} = {_KL_TEXT[est]}, Δ = log π_ref(o_it) − log π_θ(o_it){clamp}")
        if cfg.use_bias_correction_kl:
            lines.append("KL weighted by ρ_it (use_bias_correction_kl=True, DeepSeek-V3.2; False for DeepSeekMath)")
        ref = f"refreshed π_ref ← π_θ every {cfg.ref_refresh_steps} generation batches" if cfg.ref_refresh_steps \
            else "the initial policy"
        lines.append(f"π_ref = {ref}")
    return "GRPO+ objective\n  " + "\n  ".join(lines)
