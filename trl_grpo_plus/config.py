"""``GRPOPlusConfig``: TRL's ``GRPOConfig`` plus the choices TRL fixes, each documented with its formula.

New fields (see docs/trainer.md for the full reference):

    std_estimator            Â_i = (r_i − mean_g(r)) / (σ + ε),  σ with ÷(n−1) "sample" or ÷n "population"
    advantage_epsilon        the ε above (TRL hard-codes 1e-4)
    kl_estimator, kl_clamp   β·clamp(k_j(Δ), −c, c) added per token, Δ = log π_ref − log π_θ
    shuffle_each_iteration   re-draw the mini-batches in each of the μ epochs over one generation batch
    ref_refresh_steps        π_ref ← π_θ every N generation batches, at a generation boundary
    reward_failure_window, reward_failure_fraction
                             fail closed: stop when a reward function failed on ≥ f of the samples of W batches
    partial_reward_failure   'zero' (TRL: nansum) or 'drop' (NaN reward, Â = 0) when only some functions scored
    process_supervision      step rewards: r̃_j normalised over all steps of the group, Â_{i,t} = Σ_{index(j)≥t} r̃_j
    dynamic_sampling, dynamic_sampling_max_rounds
                             DAPO: drop all-equal groups and regenerate, at most N extra rounds

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
PARTIAL_FAILURE = ("zero", "drop")
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
    reward_failure_window: int = field(
        default=3,
        metadata={
            "help": "Fail closed: stop with an error naming the reward function when, over the last W consecutive "
            "generation batches (all processes), failed_k / samples ≥ reward_failure_fraction for some function k. A "
            "sample fails for k when k raised (its rewards became None) or when k, a Verifier, counted an error for "
            "it (stats['errors']); a None that means 'cannot tell' is not a failure. Occasional failures below the "
            "threshold are tolerated. 0 turns the check off."
        },
    )
    reward_failure_fraction: float = field(
        default=1.0,
        metadata={
            "help": "The f in failed_k / samples ≥ f over the last reward_failure_window generation batches. 1.0 "
            "(default): stop only when every sample of the window failed. In (0, 1]."
        },
    )
    partial_reward_failure: Literal["zero", "drop"] = field(
        default="zero",
        metadata={
            "help": "A sample that some reward functions scored and others did not (None / NaN). 'zero' (TRL's "
            "behaviour): r_i = Σ_k w_k r_ik over the functions that scored it (nansum: an unscored function counts "
            "0, which biases the group baseline when it failed). 'drop': r_i = NaN, so the sample leaves the group "
            "mean and std and gets Â_i = 0 (it stays in the KL term). Use 'drop' when None means failure; keep "
            "'zero' when reward functions return None on purpose for samples they do not apply to."
        },
    )
    process_supervision: bool = field(
        default=False,
        metadata={
            "help": "DeepSeekMath §4.1.3 process supervision. A reward function may then return, per completion, a "
            "list of steps [(end_char_offset, reward), ...] (offsets into the completion text, increasing). Every "
            "step j gets r̃_j = (r_j − mean(R)) / (σ(R) + ε), R = all steps of the G completions of the prompt (σ "
            "as std_estimator says; scale_rewards='none': no division; 'batch': σ over every step of the batch), "
            "and each token gets Â_{i,t} = Σ_{index(j) ≥ t} r̃_j, index(j) = the token holding the step's last "
            "character. A scalar reward counts as one step ending at the last token."
        },
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO dynamic sampling: after scoring a generation batch, drop each group whose rewards are all "
            "equal (std = 0, no signal), generate fresh groups for prompts drawn from the train dataset, and repeat "
            "until the batch holds generation_batch_size / G groups with signal or dynamic_sampling_max_rounds "
            "extra rounds were run (then constant groups fill the rest, with Â = 0). Every process keeps whole "
            "groups, and all processes run the same number of rounds."
        },
    )
    dynamic_sampling_max_rounds: int = field(
        default=3,
        metadata={
            "help": "Cap on the extra generation rounds per generation batch with dynamic_sampling: at most "
            "1 + dynamic_sampling_max_rounds generations of a whole generation batch."
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
        if self.dynamic_sampling:  # needs TRL's derived generation_batch_size
            local = self.generation_batch_size // max(self.world_size, 1)
            if local % self.num_generations != 0:
                raise ValueError(
                    f"dynamic_sampling=True needs whole groups on each process, but each process holds {local} "
                    f"completions of a generation batch (per_device_train_batch_size × steps_per_generation), not a "
                    f"multiple of num_generations={self.num_generations}. Make per_device_train_batch_size × "
                    "steps_per_generation a multiple of num_generations.")
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
        """The std actually used: 'none' when scale_rewards='none' (with sum_then_normalize), else std_estimator
        (unset → 'sample'). normalize_then_sum divides by per-function group stds and a batch std whatever
        scale_rewards says, as TRL does."""
        if self.scale_rewards == "none" and self.multi_objective_aggregation == "sum_then_normalize":
            return "none"
        return self.std_estimator or "sample"  # normalize_then_sum always divides by a std (TRL's GDPO)

    def _check_plus_fields(self) -> None:
        """Validate the new fields and their interplay with TRL's, naming the fix in each error."""
        scale = {True: "group", False: "none"}.get(self.scale_rewards, self.scale_rewards)
        _one_of("scale_rewards", scale, SCALE_REWARDS)
        _one_of("loss_type", self.loss_type, OWN_LOSS_TYPES + TRL_LOSS_TYPES)
        _one_of("multi_objective_aggregation", self.multi_objective_aggregation, AGGREGATIONS)
        _one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        no_std = scale == "none" and self.multi_objective_aggregation == "sum_then_normalize"
        if self.std_estimator is not None:
            _one_of("std_estimator", self.std_estimator, STD_ESTIMATORS)
            if no_std:
                raise ValueError(
                    f"std_estimator={self.std_estimator!r} has no effect with scale_rewards='none' (advantages are "
                    "not divided by a std). Drop std_estimator, or set scale_rewards='group' or 'batch'."
                )
        if not (isinstance(self.advantage_epsilon, (int, float)) and self.advantage_epsilon >= 0):
            raise ValueError(f"advantage_epsilon must be a number ≥ 0, got {self.advantage_epsilon!r}.")
        if no_std and self.advantage_epsilon != DEFAULT_ADVANTAGE_EPSILON:
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
        self._check_reward_fields(scale)

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

    def _check_reward_fields(self, scale: str) -> None:
        _one_of("partial_reward_failure", self.partial_reward_failure, PARTIAL_FAILURE)
        if not (isinstance(self.reward_failure_window, int) and self.reward_failure_window >= 0):
            raise ValueError(f"reward_failure_window must be an integer ≥ 0 (0 turns the check off), got "
                             f"{self.reward_failure_window!r}.")
        fraction = self.reward_failure_fraction
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"reward_failure_fraction must be in (0, 1] (1.0 = stop only when every sample of the "
                             f"window failed), got {fraction!r}.")
        own_loss = self.loss_type in OWN_LOSS_TYPES and not self.use_adaptive_entropy
        for flag in ("process_supervision", "dynamic_sampling"):
            if getattr(self, flag) and self.multi_objective_aggregation != "sum_then_normalize":
                raise ValueError(f"{flag}=True needs multi_objective_aggregation='sum_then_normalize' (a weighted sum "
                                 "of the reward functions, normalised per group). Set it, or turn the flag off.")
        if self.process_supervision and not own_loss:
            raise ValueError(
                f"process_supervision=True gives one advantage per token, which TRL's own loss (loss_type="
                f"{self.loss_type!r}{', use_adaptive_entropy=True' if self.use_adaptive_entropy else ''}) does not "
                f"take. Pick a clipped-surrogate loss_type ({', '.join(OWN_LOSS_TYPES)}) without adaptive entropy.")
        if self.dynamic_sampling:
            rounds = self.dynamic_sampling_max_rounds
            if not (isinstance(rounds, int) and rounds >= 1):
                raise ValueError(f"dynamic_sampling_max_rounds must be an integer ≥ 1 (extra generation rounds), got "
                                 f"{rounds!r}.")
            if scale == "batch":
                raise ValueError("dynamic_sampling=True keeps or drops whole groups, but scale_rewards='batch' makes "
                                 "every advantage depend on the whole batch. Set scale_rewards='group' (DAPO) or "
                                 "'none'.")

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
        """The DeepSeekMath GRPO preset (Shao et al. 2024, §4.1-4.2), with ``overrides`` applied on top.

        β = 0.04 with the k3 estimator (eq. 4), not weighted by ρ (TRL's default use_bias_correction_kl=True is
        DeepSeek-V3.2's correction, not DeepSeekMath's objective); loss_type 'grpo' (1/G Σ_i 1/|o_i| Σ_t, eq. 3);
        group std (sample, ε = 1e-4); G = 64 completions per prompt; learning rate 1e-6; max completion length
        1024; one policy update per exploration stage: μ = 1 and steps_per_generation = gradient_accumulation_steps
        (overrides that break this are refused: build a GRPOPlusConfig directly for other schedules); no vLLM
        importance-sampling correction (the paper samples from π_old itself); dropout disabled (disable_dropout).
        The paper's training batch of 1024 completions (16 prompts × 64) depends on your hardware: set
        per_device_train_batch_size × processes × gradient_accumulation_steps to a multiple of 64. The paper does
        not state the clip ε; TRL's 0.2 is kept. Process supervision (§4.1.3) is ``process_supervision=True``.
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
            vllm_importance_sampling_correction=False,
            disable_dropout=True,
        )
        cfg = _preset(cls, "deepseekmath", preset, overrides)
        if cfg.num_iterations != 1 or cfg.steps_per_generation != cfg.gradient_accumulation_steps:
            raise ValueError(
                f"GRPOPlusConfig.deepseekmath() does one policy update per exploration stage (μ = 1, "
                f"steps_per_generation = gradient_accumulation_steps), but the overrides give num_iterations="
                f"{cfg.num_iterations}, steps_per_generation={cfg.steps_per_generation}, gradient_accumulation_steps="
                f"{cfg.gradient_accumulation_steps}. Drop num_iterations / steps_per_generation / "
                "generation_batch_size from the overrides, or build GRPOPlusConfig(...) directly.")
        return cfg

    @classmethod
    def dapo(cls, **overrides: Any) -> GRPOPlusConfig:
        """The DAPO preset (Yu et al. 2025, "DAPO: an open-source LLM RL system at scale"), ``overrides`` on top.

        Clip-higher ε_low = 0.2, ε_high = 0.28 (§3.1); dynamic sampling (§3.2; at most 3 extra rounds here, the
        paper does not cap it); token-level loss, loss_type 'dapo' (§3.3); no KL term, β = 0 (§2.3); G = 16; group
        std; learning rate 1e-6; 16 policy updates per generation batch (mini-batches of 1/16 of it:
        steps_per_generation = 16 × gradient_accumulation_steps, unless overridden); max completion length 20480.
        The overlong reward shaping (§3.4) is a reward, not a setting: add ``get_verifier("overlong",
        max_length=20480, cache_length=4096)`` to your reward functions.
        """
        accumulation = overrides.get("gradient_accumulation_steps", 1)
        preset: dict[str, Any] = dict(
            beta=0.0,
            loss_type="dapo",
            epsilon=0.2,
            epsilon_high=0.28,
            scale_rewards="group",
            num_generations=16,
            num_iterations=1,
            learning_rate=1e-6,
            max_completion_length=20480,
            dynamic_sampling=True,
            dynamic_sampling_max_rounds=3,
        )
        if "generation_batch_size" not in overrides:
            preset["steps_per_generation"] = 16 * accumulation
        return _preset(cls, "dapo", preset, overrides)

    @classmethod
    def dr_grpo(cls, **overrides: Any) -> GRPOPlusConfig:
        """The Dr. GRPO preset (Liu et al. 2025, "Understanding R1-Zero-like training"), ``overrides`` on top.

        No length normalisation: loss_type 'dr_grpo', Σ_i Σ_t / (G · L_max); no std normalisation:
        Â_i = r_i − mean_group(r) (scale_rewards='none'); no KL term, β = 0 (the paper's minimal recipe); G = 8;
        μ = 1; learning rate 1e-6; max completion length 3000; the clip ε = 0.2.
        """
        preset: dict[str, Any] = dict(
            beta=0.0,
            loss_type="dr_grpo",
            scale_rewards="none",
            epsilon=0.2,
            num_generations=8,
            num_iterations=1,
            learning_rate=1e-6,
            max_completion_length=3000,
        )
        return _preset(cls, "dr_grpo", preset, overrides)

    def objective_formula(self) -> str:
        """The objective in effect, as readable text with the chosen values (logged once by the trainer)."""
        return _render_objective(self)


PLUS_FIELDS = tuple(GRPOPlusConfig.__annotations__)  # the fields declared in the class body above, in order
GRPOPlusConfig.preset = None  # set by the preset constructors (not a field: it names where the values came from)
PRESET_PAPERS = {
    "deepseekmath": "DeepSeekMath GRPO, Shao et al. 2024",
    "dapo": "DAPO, Yu et al. 2025",
    "dr_grpo": "Dr. GRPO, Liu et al. 2025",
}


def _preset(cls, name: str, preset: dict[str, Any], overrides: dict[str, Any]) -> GRPOPlusConfig:
    """Build ``cls(**preset | overrides)`` and remember which preset it came from (named in the objective)."""
    cfg = cls(**{**preset, **overrides})
    cfg.preset = name
    return cfg


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


def _advantage_text(cfg: GRPOPlusConfig) -> str:
    eps = f"{cfg.advantage_epsilon:g}"
    std = cfg.resolved_std_estimator
    if cfg.multi_objective_aggregation == "normalize_then_sum":  # TRL's GDPO: ignores scale_rewards
        return (f"Â_i = (s_i − mean_batch(s)) / (std_{std},batch(s) + {eps}),  s_i = Σ_k w_k·(r_ik − mean_group(r_k)) / "
                f"(std_{std},group(r_k) + {eps})   [normalize_then_sum: per reward function k, then batch]")
    scope = "group" if cfg.scale_rewards == "group" else "batch"
    if cfg.process_supervision:
        norm = "r_j − mean(R)" if std == "none" else f"(r_j − mean(R)) / (std_{std},{scope}(R) + {eps})"
        where = "all steps of the G completions of the prompt" if scope == "group" or std == "none" else \
            "mean over the group's steps, std over every step of the batch"
        return (f"Â_it = Σ_{{index(j) ≥ t}} r̃_j,  r̃_j = {norm},  R = {where}   [process supervision, DeepSeekMath "
                "§4.1.3; a scalar reward is one step at the last token]")
    if std == "none":
        return "Â_i = r_i − mean_group(r)"
    return f"Â_i = (r_i − mean_group(r)) / (std_{std},{scope}(r) + {eps})"


def _render_objective(cfg: GRPOPlusConfig) -> str:
    eps_low = cfg.epsilon
    eps_high = cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon
    adv = "Â_it" if cfg.process_supervision else "Â_i"
    vllm_is = bool(cfg.use_vllm and cfg.vllm_importance_sampling_correction)
    lines = []
    if cfg.loss_type in OWN_LOSS_TYPES:
        agg, note = _AGGREGATION_TEXT[cfg.loss_type]
        rho = "min(ρ_it, δ)" if cfg.delta is not None else "ρ_it"
        factors = "".join(f for f, on in (("w_it·", vllm_is), ("H_it·", cfg.top_entropy_quantile < 1.0),
                                           ("M_i·", cfg.off_policy_mask_threshold is not None)) if on)
        weight = "ρ_it·" if cfg.use_bias_correction_kl else ""
        kl_term = f" − {cfg.beta:g}·{weight}KL_it" if cfg.beta != 0 else ""
        entropy = f" − {cfg.entropy_coef:g}·Ent" if cfg.entropy_coef != 0 and not cfg.use_adaptive_entropy else ""
        lines.append(f"L(θ) = −{agg} [ {factors}min({rho}·{adv}, clip(ρ_it, {1 - eps_low:g}, {1 + eps_high:g})·{adv})"
                     f"{kl_term} ]{entropy}")
        lines.append(f"loss_type={cfg.loss_type!r}: {note.format(L=cfg.max_completion_length)}")
    else:
        lines.append(f"loss_type={cfg.loss_type!r}: TRL's own loss (see the TRL docs), with the advantages below")
    rho = "exp(mean_t log π_θ/π_old) per sequence" if cfg.importance_sampling_level == "sequence" else \
        "π_θ(o_it)/π_old(o_it)"
    if cfg.delta is not None and cfg.loss_type in OWN_LOSS_TYPES:
        rho += f", capped at δ = {cfg.delta:g} in the unclipped term (two-sided clip, INTELLECT-2)"
    updates = cfg.num_iterations * cfg.steps_per_generation / cfg.gradient_accumulation_steps
    lines.append(f"ρ_it = {rho};  G = {cfg.num_generations};  μ = {cfg.num_iterations}"
                 + ("  (mini-batches re-drawn every epoch)" if cfg.shuffle_each_iteration and cfg.num_iterations > 1
                    else "")
                 + f";  policy updates per generation batch = μ·steps_per_generation/GA = {updates:g}")
    lines.append(_advantage_text(cfg) + "   [NaN rewards excluded; all-equal group → 0]")
    failure = ("a function that did not score a sample counts 0 (TRL's nansum)" if cfg.partial_reward_failure == "zero"
               else "a sample that any function did not score is dropped (NaN, Â = 0)")
    total = "Σ_k w_k·…" if cfg.multi_objective_aggregation == "normalize_then_sum" else "r_i = Σ_k w_k·r_ik"
    lines.append(f"{total} over the reward functions k;  {failure}")
    if cfg.dynamic_sampling:
        lines.append(f"dynamic sampling (DAPO): all-equal groups dropped and regenerated, ≤ "
                     f"{cfg.dynamic_sampling_max_rounds} extra rounds per generation batch")
    if cfg.beta != 0:
        est = cfg.kl_estimator if cfg.loss_type in OWN_LOSS_TYPES else "k3"
        clamp = f", clamped to ±{cfg.kl_clamp:g}" if cfg.kl_clamp is not None else ""
        lines.append(f"KL_it = {est} = {_KL_TEXT[est]}, Δ = log π_ref(o_it) − log π_θ(o_it){clamp}")
        if cfg.use_bias_correction_kl:
            lines.append("KL weighted by ρ_it (use_bias_correction_kl=True, DeepSeek-V3.2; False for DeepSeekMath)")
        ref = f"refreshed π_ref ← π_θ every {cfg.ref_refresh_steps} generation batches" if cfg.ref_refresh_steps \
            else "the initial policy"
        lines.append(f"π_ref = {ref}")
    if cfg.loss_type in OWN_LOSS_TYPES:
        lines.extend(_option_lines(cfg, vllm_is))
    if cfg.mask_truncated_completions:
        lines.append("completions cut at max_completion_length are masked out of every term "
                     "(mask_truncated_completions=True)")
    title = "GRPO+ objective" + (f" ({PRESET_PAPERS[cfg.preset]} preset)" if cfg.preset else "")
    return title + "\n  " + "\n  ".join(lines)


def _option_lines(cfg: GRPOPlusConfig, vllm_is: bool) -> list[str]:
    """One line per TRL option that changes the clipped-surrogate objective."""
    lines = []
    if vllm_is:
        low, high = cfg.vllm_importance_sampling_clip_min, cfg.vllm_importance_sampling_clip_max
        bounds = f"[{'−∞' if low is None else f'{low:g}'}, {'∞' if high is None else f'{high:g}'}]"
        how = "clipped to" if cfg.vllm_importance_sampling_mode.endswith("truncate") else "zero outside"
        lines.append(f"w_it = π_old(o_it)/π_vLLM(o_it), {cfg.vllm_importance_sampling_mode} ({how} {bounds}): "
                     "vLLM importance-sampling correction")
    elif cfg.use_vllm:
        lines.append("no vLLM importance-sampling correction: vLLM's samples are treated as drawn from π_old")
    if cfg.top_entropy_quantile < 1.0:
        lines.append(f"H_it = 1 for the top {cfg.top_entropy_quantile:g} fraction of completion tokens by entropy "
                     "(all processes), else 0")
    if cfg.off_policy_mask_threshold is not None:
        lines.append(f"M_i = 0 when Â_i < 0 and mean_t(log π_sampler − log π_θ) > {cfg.off_policy_mask_threshold:g}, "
                     "else 1 (off-policy sequence mask, DeepSeek-V3.2; π_sampler = vLLM's π, else π_old)")
    if cfg.entropy_coef != 0 and not cfg.use_adaptive_entropy:
        lines.append("Ent = token mean of the policy entropy over the completion tokens"
                     + (" kept by H_it" if cfg.top_entropy_quantile < 1.0 else ""))
    if cfg.use_adaptive_entropy:
        lines.append("adaptive entropy coefficient (TRL's controller, TRL's loss)")
    return lines
