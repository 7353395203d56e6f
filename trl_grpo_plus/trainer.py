"""``GRPOPlusTrainer``: ``trl.GRPOTrainer`` with the DeepSeekMath objective's choices made explicit.

Wiring only: the math lives in ``trl_grpo_plus.algos``, TRL's private hooks are reached through
``trl_grpo_plus._trl_compat``. What changes with respect to ``trl.GRPOTrainer``:

- **Advantages** come from ``algos.advantages.group_advantages`` on the rewards gathered from every process (a group
  may span processes), with the configured std (sample / population / none), scope and ε; each process then keeps
  its own slice. NaN rewards (every reward function returned None) are excluded from mean and std and get Â = 0; they
  stay in the KL term and in the token counts, as in TRL. An all-equal group gets exactly 0.
- **Loss** for loss_type grpo / bnpo / dapo / dr_grpo: clipped surrogate (``algos.policy_loss``) plus β times the
  chosen KL estimator (``algos.kl``), aggregated as loss_type says (``algos.aggregation``). Every TRL option of
  that loss keeps working: vLLM importance-sampling correction, clip-higher (epsilon_high), delta, sequence-level
  importance sampling, off-policy masking, top-entropy masking, a fixed entropy bonus, MoE auxiliary loss, bias
  corrected KL. TRL's other loss types (cispo, sapo, luspo, vespo) and the adaptive entropy controller keep TRL's
  own loss (k3 KL); the config refuses a non-default KL setting with them.
- **μ epochs**: old log-probs are computed once per generation batch (TRL's rule). With shuffle_each_iteration the
  mini-batches are re-drawn at the start of every epoch.
- **Reference refresh**: with ref_refresh_steps = N, π_ref ← π_θ before generation batch k·N (k ≥ 1) is scored, so
  reference log-probs are always recomputed after a refresh. Checkpoints carry the refresh counter and, once a
  refresh happened, the reference weights, so a resumed run continues with the refreshed reference.
- **PEFT**: with ref_refresh_steps the reference is a frozen copy of the trained adapter (adapter "ref"), made at
  start (π_ref = π_θ₀; for a fresh LoRA, B = 0 makes this the base model, TRL's reference) and overwritten at each
  refresh. Without it, TRL's semantics hold (fresh adapter: base model; pre-trained adapter: copy made at start).
- **Reward functions** are wrapped: one that raises gets None for that call (logged, counted), so training
  continues; one that returns the wrong number of rewards stops training with an error naming it. Fail closed: a
  function that failed (raised, or counted a Verifier error) on ≥ reward_failure_fraction of the samples of the
  last reward_failure_window generation batches stops training with an error naming it. partial_reward_failure
  picks TRL's nansum ("zero") or a NaN reward ("drop") for a sample only some functions scored.
- **Process supervision** (process_supervision=True, DeepSeekMath §4.1.3): a reward function may return step
  lists (``trl_grpo_plus.step_rewards``); their char offsets are mapped to tokens on each process, the steps of
  all processes are gathered, normalised over each group (``algos.process``) and turned into per-token advantages
  Â_{i,t} [B, T], which the loss takes as they are.
- **Dynamic sampling** (dynamic_sampling=True, DAPO): groups whose rewards are all equal are dropped and fresh
  groups generated, up to dynamic_sampling_max_rounds extra rounds (``trl_grpo_plus.dynamic_sampling``).
- **Metrics** beside TRL's: groups/zero_variance_frac, kl/<estimator>, rewards/excluded_samples,
  rewards/failed_samples, steps/*, dynamic_sampling/* (TRL's kl, entropy and clip_ratio/* keep their names).

Sharded engines (run on two CPU processes by tests/test_fsdp.py and tests/test_deepspeed.py): under FSDP2 the refresh
copies the reference shard by shard (same layout as the policy, checked first); under ZeRO-3 it goes through TRL's
``SyncRefModelCallback.sync_target_model`` (one gather), and the PEFT adapter copy through ``sharded.writable``; the
reference checkpoint is one gathered file of full tensors (``trl_grpo_plus.sharded``). FSDP1 with ref_refresh_steps
is refused. Not covered here (not run): vLLM generation, multi-GPU CUDA.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._trl_compat import GRPOTrainerHooks, SyncRefModelCallback, gather_object, is_peft_model, nanmax, nanmin
from .algos.advantages import advantage_stats, group_advantages
from .algos.aggregation import MODE_FOR_LOSS_TYPE, aggregate_parts
from .algos.kl import kl_estimate
from .algos.policy_loss import clip_counts, clipped_surrogate
from .algos.process import normalized_step_rewards, token_advantages
from .config import OWN_LOSS_TYPES, GRPOPlusConfig
from .dynamic_sampling import draw_groups, merge_groups, signal_groups
from .rewards.base import completion_text
from .step_rewards import check_steps, is_steps, step_end_tokens, steps_mean
from .sharded import full_values, layout_mismatch, load_full_values, writable

logger = logging.getLogger(__name__)

STATE_FILE = "grpo_plus_state.json"
REFERENCE_FILE = "grpo_plus_reference.pt"
REF_ADAPTER = "ref"


class SafeRewardFunc:
    """A reward function that never raises into the trainer, but still rejects a wrong number of rewards.

    An exception inside the wrapped function turns that call's rewards into None (TRL leaves those samples out) and
    is logged with the function's name and counted. A result that is not one reward per completion raises.
    """

    def __init__(self, func: Callable, name: str, allow_steps: bool = False):
        self.func = func
        self.__name__ = name
        self.allow_steps = allow_steps
        self.last_steps: list | None = None  # per completion of the last call: a step list, or None (scalar)
        self.failed_samples = 0
        self.last_error = ""
        self._verifier_errors = self._errors_counted()

    def _errors_counted(self) -> int:
        """Errors the wrapped function counted itself (a ``Verifier`` scores None and adds to stats['errors'])."""
        stats = getattr(self.func, "stats", None)
        return int(stats.get("errors", 0)) if isinstance(stats, Mapping) else 0

    def take_failures(self) -> int:
        """Samples that failed since the last call: raised here, or counted as errors by the function itself."""
        counted = self._errors_counted()
        failed = self.failed_samples + max(counted - self._verifier_errors, 0)
        self.failed_samples, self._verifier_errors = 0, counted
        return failed

    def __getattr__(self, name: str):  # the wrapped function's own attributes stay reachable
        if name == "func":
            raise AttributeError(name)
        return getattr(self.func, name)

    def _fallback(self, error: Exception, n: int) -> list[None]:
        self.failed_samples += n
        first = not self.last_error
        self.last_error = f"{type(error).__name__}: {error}"
        logger.warning("reward function %r raised %s: %s; its rewards for these %d completions are None",
                       self.__name__, type(error).__name__, error, n, exc_info=first)  # traceback once
        return [None] * n

    def _check(self, rewards: Any, n: int) -> list:
        if isinstance(rewards, torch.Tensor):
            rewards = rewards.tolist()
        if isinstance(rewards, (str, bytes, dict)) or not hasattr(rewards, "__len__"):
            raise TypeError(f"reward function {self.__name__!r} returned a {type(rewards).__name__}; it must return a "
                            f"list with one reward (float or None) per completion ({n} here).")
        if len(rewards) != n:
            raise ValueError(f"reward function {self.__name__!r} returned {len(rewards)} rewards for {n} completions; "
                             "it must return exactly one reward (float or None) per completion, in order.")
        rewards = list(rewards)
        self.last_steps = None
        if any(is_steps(r) for r in rewards):
            if not self.allow_steps:
                raise ValueError(f"reward function {self.__name__!r} returned step rewards (lists of (end_char_offset, "
                                 "reward)); set process_supervision=True in GRPOPlusConfig to train on them, or return "
                                 "one float per completion.")
            self.last_steps = [check_steps(r, self.__name__, i) if is_steps(r) else None for i, r in enumerate(rewards)]
            rewards = [steps_mean(steps) if steps is not None else r for r, steps in zip(rewards, self.last_steps)]
        return rewards

    def __call__(self, *args, **kwargs):
        n = len(kwargs["prompts"])
        try:
            rewards = self.func(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - a reward function must never stop training
            self.last_steps = None
            return self._fallback(error, n)
        return self._check(rewards, n)


class SafeAsyncRewardFunc(SafeRewardFunc):
    """``SafeRewardFunc`` for an ``async`` reward function (TRL awaits it on its event loop)."""

    async def __call__(self, *args, **kwargs):
        n = len(kwargs["prompts"])
        try:
            rewards = await self.func(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            self.last_steps = None
            return self._fallback(error, n)
        return self._check(rewards, n)


def _wrap_reward_funcs(reward_funcs, allow_steps: bool = False):
    """Wrap plain callables (not model ids, not reward models) in SafeRewardFunc / SafeAsyncRewardFunc."""
    if reward_funcs is None:
        return None
    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    wrapped = []
    for func in funcs:
        if isinstance(func, (str, torch.nn.Module, SafeRewardFunc)) or not callable(func):
            wrapped.append(func)
            continue
        base = func.func if hasattr(func, "func") and hasattr(func, "args") else func  # functools.partial
        name = getattr(base, "__name__", type(base).__name__)
        is_async = inspect.iscoroutinefunction(base) or inspect.iscoroutinefunction(getattr(base, "__call__", None))
        wrapped.append((SafeAsyncRewardFunc if is_async else SafeRewardFunc)(func, name, allow_steps))
    return wrapped


def _ensure_log_handler() -> None:
    """Show our INFO lines (the objective) when the application has not configured logging, as transformers does."""
    package = logging.getLogger("trl_grpo_plus")
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
    if not package.handlers and not logging.getLogger().handlers:
        package.addHandler(logging.StreamHandler())


class GRPOPlusTrainer(GRPOTrainerHooks):
    """``trl.GRPOTrainer`` computing the DeepSeekMath GRPO objective with every choice explicit.

    Takes the same arguments as ``trl.GRPOTrainer``; ``args`` must be a ``GRPOPlusConfig``. See the module docstring
    for what differs from TRL and docs/trainer.md for the formulas.
    """

    _tag_names = ["trl", "grpo", "trl-grpo-plus"]

    def __init__(self, model, reward_funcs=None, args: GRPOPlusConfig | None = None, *pos, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = GRPOPlusConfig(f"{str(name).rstrip('/').split('/')[-1]}-GRPO")
        elif not isinstance(args, GRPOPlusConfig):
            raise TypeError(f"GRPOPlusTrainer needs a GRPOPlusConfig, got {type(args).__name__}. Build one with the "
                            "same keyword arguments: GRPOPlusConfig(output_dir=..., ...).")
        super().__init__(model, _wrap_reward_funcs(reward_funcs, args.process_supervision), args, *pos, **kwargs)
        self._plus_generation_batches = 0  # generation batches started in training (drives the refresh)
        self._plus_refreshes = 0
        self._plus_failure_window: deque | None = None  # (failed per function, samples) of recent generation batches
        self._plus_own_loss = args.loss_type in OWN_LOSS_TYPES and not args.use_adaptive_entropy
        model_dtype = getattr(self.accelerator.unwrap_model(self.model), "dtype", torch.float32)
        self._plus_adv_dtype = torch.float64 if model_dtype == torch.float64 else torch.float32
        if args.ref_refresh_steps and self.beta != 0.0 and self.is_fsdp_enabled and not self.accelerator.is_fsdp2:
            raise ValueError(f"ref_refresh_steps={args.ref_refresh_steps} is not supported under FSDP version 1 (its "
                             "flat parameters are not checked to shard the reference like the policy). Use FSDP2: "
                             "fsdp_version: 2 in the accelerate config (examples/accelerate/fsdp.yaml), or DeepSpeed.")
        if args.dynamic_sampling:
            dataset = self.train_dataset
            if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
                raise ValueError("dynamic_sampling=True draws fresh prompts from train_dataset by index, but it is an "
                                 f"iterable dataset ({type(dataset).__name__}). Pass a map-style datasets.Dataset, "
                                 "or set dynamic_sampling=False.")
            seed = args.seed * 7919 + self.accelerator.process_index + 1  # different prompts on every process
            self._plus_sampling_generator = torch.Generator().manual_seed(seed)
        if args.ref_refresh_steps and self.beta != 0.0 and is_peft_model(self.model):
            self._plus_add_reference_adapter()
        for callback in self.callback_handler.callbacks:  # e.g. BenchmarkCallback, which logs through the trainer
            if hasattr(callback, "bind_trainer") and getattr(callback, "trainer", None) is None:
                callback.bind_trainer(self)
        self.objective = args.objective_formula()
        if self.accelerator.is_main_process:
            _ensure_log_handler()
            logger.info("%s", self.objective)

    # ---- advantages ------------------------------------------------------------------------------------------------
    def compute_advantages(self, rewards_per_func: torch.Tensor, group_size: int):
        """Advantages [N] (float64) and count stats from the gathered rewards [N, n_funcs] of all processes."""
        cfg = self.args
        rewards = rewards_per_func.double()  # [N, F]
        unscorable = torch.isnan(rewards).all(dim=1)  # [N]
        drop = torch.isnan(rewards).any(dim=1) if cfg.partial_reward_failure == "drop" else unscorable  # [N]
        total = (rewards * self.reward_weights.to(rewards)).nansum(dim=1)  # [N] (nansum: unscored counts 0)
        total[drop] = torch.nan
        if self.multi_objective_aggregation == "sum_then_normalize":
            scope = "batch" if self.scale_rewards == "batch" else "group"
            adv = group_advantages(total, group_size, cfg.resolved_std_estimator, scope, cfg.advantage_epsilon)
        else:  # normalize_then_sum (GDPO): per function in its group, weighted sum, then batch-normalised (TRL)
            std = cfg.resolved_std_estimator
            per_func = torch.stack([group_advantages(rewards[:, k], group_size, std, "group", cfg.advantage_epsilon)
                                    for k in range(rewards.size(1))], dim=1)  # [N, F]
            summed = (per_func * self.reward_weights.to(rewards)).sum(dim=1)  # [N]
            summed[drop] = torch.nan
            adv = group_advantages(summed, summed.numel(), std, "group", cfg.advantage_epsilon)
        return adv, advantage_stats(total, group_size)

    def _plus_after_generation(self, batch: dict, rewards_per_func: torch.Tensor) -> dict:
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        advantages, stats = self.compute_advantages(rewards_per_func, group_size)  # [N_global]
        n_local = batch["advantages"].shape[0]
        start = self.accelerator.process_index * n_local
        if self.args.process_supervision:
            local = self._plus_process_advantages(batch, rewards_per_func, group_size, start, mode)  # [B_local, T]
            batch["advantages"] = local.to(self._plus_adv_dtype)
            advantages = self.accelerator.gather(local[:, 0].contiguous()) if self.accelerator.num_processes > 1 \
                else local[:, 0]  # Â_{i,0} = Σ_j r̃_j per completion, for the completions table
        else:
            batch["advantages"] = advantages[start : start + n_local].to(self._plus_adv_dtype)  # [B_local]
        self.replace_logged_advantages(advantages.tolist())
        failed = self._plus_take_failures()  # [F] global counts
        flat = (stats["zero_variance_groups"] / stats["groups"]).double()
        flat_frac, excluded, failed_total = torch.stack([flat, stats["excluded"].double(), failed.sum()]).tolist()
        self.log_metric(mode, "groups/zero_variance_frac", flat_frac)
        self.log_metric(mode, "rewards/excluded_samples", excluded)
        self.log_metric(mode, "rewards/failed_samples", failed_total)
        if mode == "train":
            self._plus_check_failures(failed.tolist(), rewards_per_func.size(0))
        return batch

    # ---- dynamic sampling (DAPO) -----------------------------------------------------------------------------------
    def _plus_generate(self, inputs: list[dict]) -> dict:
        batch = self.generate_and_score(inputs)
        if not (self.args.dynamic_sampling and self.model.training):
            return batch
        return self._plus_dynamic_sampling(inputs, batch)

    def _plus_dynamic_sampling(self, inputs: list[dict], batch: dict) -> dict:
        """Keep the groups with signal, generate fresh groups until every process has len(inputs)/G of them or
        dynamic_sampling_max_rounds extra rounds ran (then all-equal groups fill the rest). All processes run the same
        rounds: the largest shortfall over the processes decides."""
        group_size, device = self.num_generations, self.accelerator.device
        need = len(inputs) // group_size  # local groups of the generation batch
        kept, spare, rounds = [], [], 1
        while True:
            for g, has_signal in enumerate(signal_groups(batch["advantages"], group_size)):
                (kept if has_signal else spare).append((batch, g))
            shortfall = torch.tensor([float(max(need - len(kept), 0))], device=device)
            shortfall = self.accelerator.gather(shortfall).max().item() if self.accelerator.num_processes > 1 \
                else shortfall.item()
            if shortfall == 0 or rounds > self.args.dynamic_sampling_max_rounds:
                break
            batch = self.generate_and_score(draw_groups(self.train_dataset, need, group_size,
                                                        self._plus_sampling_generator))
            rounds += 1
        picks = (kept + spare)[:need]
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        merged = merge_groups(picks, group_size, tokenizer.pad_token_id)
        loss_mask = merged["completion_mask"] * merged["tool_mask"] if "tool_mask" in merged else \
            merged["completion_mask"]
        counts = torch.tensor([loss_mask.sum().item(), min(len(kept), need), need, len(kept) + len(spare)],
                              dtype=torch.float64, device=device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        tokens, signal, groups, generated = counts.tolist()
        merged["num_items_in_batch"] = batch["num_items_in_batch"].new_tensor(tokens)
        self.log_metric("train", "dynamic_sampling/rounds", float(rounds))
        self.log_metric("train", "dynamic_sampling/signal_groups_frac", signal / groups)
        self.log_metric("train", "dynamic_sampling/generated_groups", generated)
        if signal < groups:
            logger.warning("dynamic sampling: %d of %d groups have signal after %d generation rounds "
                           "(dynamic_sampling_max_rounds=%d); all-equal groups (Â = 0) fill the rest",
                           signal, groups, rounds, self.args.dynamic_sampling_max_rounds)
        return merged

    # ---- process supervision ---------------------------------------------------------------------------------------
    def _plus_local_steps(self, rewards_per_func: torch.Tensor, start: int) -> tuple[list, int]:
        """(global row, end token, weighted reward) of every step of this process's completions, and the number
        of completions whose steps could not be placed on their tokens. A scalar reward is one step at the end."""
        completions, ids_list = self.completions_scored
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)

        def decode(ids):
            return tokenizer.decode(ids, skip_special_tokens=True)

        local = rewards_per_func[start : start + len(ids_list)].double()  # [B, F]
        weights = self.reward_weights.tolist()
        drop = torch.isnan(local).any(dim=1).tolist() if self.args.partial_reward_failure == "drop" else None
        steps, unmapped = [], 0
        for i, ids in enumerate(ids_list):
            if drop is not None and drop[i]:
                continue
            last = max(len(ids) - 1, 0)
            for k, (func, weight) in enumerate(zip(self.reward_funcs, weights)):
                listed = getattr(func, "last_steps", None)
                if listed is not None and listed[i] is not None:
                    tokens = step_end_tokens(decode, ids, completion_text(completions[i]), [o for o, _ in listed[i]])
                    if tokens is None:
                        unmapped += 1
                        continue
                    steps.extend((start + i, t, weight * r) for t, (_, r) in zip(tokens, listed[i]))
                elif not torch.isnan(local[i, k]):
                    steps.append((start + i, last, weight * local[i, k].item()))
        return steps, unmapped

    def _plus_process_advantages(self, batch, rewards_per_func, group_size, start, mode) -> torch.Tensor:
        """Â_{i,t} for this process's rows [B_local, T] from the steps of every process (DeepSeekMath §4.1.3)."""
        cfg = self.args
        steps, unmapped = self._plus_local_steps(rewards_per_func, start)
        if self.accelerator.num_processes > 1:
            steps = gather_object(steps)
            unmapped = sum(gather_object([unmapped]))
        n_global, (n_local, length) = rewards_per_func.size(0), batch["completion_ids"].shape
        rows = torch.tensor([s[0] for s in steps], dtype=torch.long)  # [S]
        tokens = torch.tensor([s[1] for s in steps], dtype=torch.long)  # [S]
        rewards = torch.tensor([s[2] for s in steps], dtype=torch.float64)  # [S]
        scope = "batch" if cfg.scale_rewards == "batch" else "group"
        r_tilde = normalized_step_rewards(rewards, rows // group_size, n_global // group_size,
                                          cfg.resolved_std_estimator, scope, cfg.advantage_epsilon)  # [S]
        mine = (rows >= start) & (rows < start + n_local)  # [S]
        local = token_advantages(r_tilde[mine], rows[mine] - start, tokens[mine], n_local, length)  # [B, T]
        self.log_metric(mode, "steps/per_completion", len(steps) / max(n_global, 1))
        self.log_metric(mode, "steps/unmapped_completions", float(unmapped))
        for func in self.reward_funcs:
            if isinstance(func, SafeRewardFunc):
                func.last_steps = None
        return local.to(self.accelerator.device)

    def _plus_take_failures(self) -> torch.Tensor:
        """Failed samples per reward function [F] since the last batch, summed over processes (float64)."""
        local = [float(f.take_failures()) if isinstance(f, SafeRewardFunc) else 0.0 for f in self.reward_funcs]
        failed = torch.tensor(local, dtype=torch.float64, device=self.accelerator.device)  # [F]
        if self.accelerator.num_processes > 1:
            failed = self.accelerator.reduce(failed, reduction="sum")
        return failed.cpu()

    def _plus_check_failures(self, failed: list[float], samples: int) -> None:
        """Fail closed: stop when a reward function failed on ≥ reward_failure_fraction of the last W batches."""
        window = self.args.reward_failure_window
        if not window:
            return
        if self._plus_failure_window is None or self._plus_failure_window.maxlen != window:
            self._plus_failure_window = deque(maxlen=window)
        self._plus_failure_window.append((failed, samples))
        if len(self._plus_failure_window) < window:
            return
        total = sum(n for _, n in self._plus_failure_window)
        for k, name in enumerate(self.reward_func_names):
            bad = sum(f[k] for f, _ in self._plus_failure_window)
            if bad >= self.args.reward_failure_fraction * total and bad > 0:
                func = self.reward_funcs[k]
                last = getattr(func, "last_error", "") or "see the warnings logged above"
                raise RuntimeError(
                    f"reward function {name!r} failed on {bad:.0f} of {total} samples over the last {window} "
                    f"generation batches (≥ reward_failure_fraction={self.args.reward_failure_fraction:g}); last "
                    f"error: {last}. Training stops rather than learn from missing rewards (fail closed). Fix the "
                    "reward function, or raise reward_failure_fraction / reward_failure_window (0 turns the check "
                    "off) to tolerate it.")

    # ---- μ epochs --------------------------------------------------------------------------------------------------
    def _plus_reshuffle_epochs(self) -> bool:
        return self.args.shuffle_each_iteration

    # ---- reference refresh -----------------------------------------------------------------------------------------
    def _plus_before_generation(self) -> None:
        if not self.model.training:
            return
        every, index = self.args.ref_refresh_steps, self._plus_generation_batches
        if every and self.beta != 0.0 and index > 0 and index % every == 0:
            self.refresh_reference()
        self._plus_generation_batches += 1

    def refresh_reference(self) -> None:
        """π_ref ← π_θ now (full model: copy the weights; PEFT: copy the trained adapter into the "ref" adapter)."""
        policy = self.accelerator.unwrap_model(self.model)
        with torch.no_grad():
            if self.ref_model is not None:
                reference = self.accelerator.unwrap_model(self.ref_model)
                mismatch = layout_mismatch(policy, reference)  # FSDP2: the copy below is shard by shard
                if mismatch is not None:
                    raise RuntimeError(f"cannot refresh the reference: {mismatch}. Shard both the same way.")
                SyncRefModelCallback.sync_target_model(policy, reference, 1.0)  # ZeRO-3: gathers both once
            else:
                _copy_adapter(policy, policy.active_adapter, REF_ADAPTER)
        self._plus_refreshes += 1
        logger.info("reference refreshed (π_ref ← π_θ) before generation batch %d", self._plus_generation_batches)

    def _plus_add_reference_adapter(self) -> None:
        policy = self.accelerator.unwrap_model(self.model)
        if REF_ADAPTER not in policy.peft_config:
            policy.add_adapter(REF_ADAPTER, policy.peft_config[policy.active_adapter])
        _copy_adapter(policy, policy.active_adapter, REF_ADAPTER)
        for name, param in policy.named_parameters():
            if f".{REF_ADAPTER}." in name:
                param.requires_grad_(False)

    def _plus_reference_tensors(self) -> dict[str, torch.Tensor]:
        """The live (possibly sharded) tensors that make up π_ref: the reference model's state, or the "ref" adapter."""
        if self.ref_model is not None:
            return self.accelerator.unwrap_model(self.ref_model).state_dict(keep_vars=True)
        policy = self.accelerator.unwrap_model(self.model)
        return {n: p for n, p in policy.named_parameters() if f".{REF_ADAPTER}." in n}

    def _plus_save_state(self, checkpoint_dir: str) -> None:
        # gathered on every rank (a collective under FSDP2 / ZeRO-3), written by the saving rank: one full file
        reference = None
        if self._plus_refreshes > 0:
            reference = full_values(self._plus_reference_tensors().items(), keep=self.args.should_save)
        if not self.args.should_save:
            return
        os.makedirs(checkpoint_dir, exist_ok=True)
        state = {"generation_batches": self._plus_generation_batches, "refreshes": self._plus_refreshes}
        with open(os.path.join(checkpoint_dir, STATE_FILE), "w") as f:
            json.dump(state, f)
        if reference is not None:
            torch.save(reference, os.path.join(checkpoint_dir, REFERENCE_FILE))

    def _plus_load_state(self, checkpoint_dir: str) -> None:
        path = os.path.join(checkpoint_dir, STATE_FILE)
        if not os.path.exists(path):
            return
        with open(path) as f:
            state = json.load(f)
        self._plus_generation_batches, self._plus_refreshes = state["generation_batches"], state["refreshes"]
        ref_path = os.path.join(checkpoint_dir, REFERENCE_FILE)
        if os.path.exists(ref_path):
            weights = torch.load(ref_path, map_location="cpu", weights_only=True, mmap=True)
            targets = self._plus_reference_tensors()
            if self.ref_model is not None and set(weights) != set(targets):
                raise KeyError(f"{ref_path} holds {len(weights)} reference tensors but the reference model has "
                               f"{len(targets)}; resume with the model the checkpoint was written for.")
            load_full_values(targets, weights)  # every rank keeps its own shard

    # ---- loss ------------------------------------------------------------------------------------------------------
    def _plus_loss(self, model, inputs):
        if not self._plus_own_loss:
            return self.trl_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]  # [B, T]
        mask = mask * inputs["tool_mask"] if "tool_mask" in inputs else mask  # [B, T]
        logps, entropies, aux_loss = self.per_token_logps(model, inputs, True, self.aux_loss_enabled)  # [B, T]
        advantages = inputs["advantages"]
        advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # [B, 1]
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps  # [B, T]
        log_ratio = logps - old_logps  # [B, T]
        if self.importance_sampling_level == "sequence":
            log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)  # [B, 1]
        ratio = torch.exp(log_ratio)  # [B, T] or [B, 1]
        per_token = clipped_surrogate(ratio, advantages, self.epsilon_low, self.epsilon_high, self.args.delta)
        per_token, entropy_mask = self._plus_masks(per_token, inputs, logps, entropies, mask, advantages)
        kl = None
        if self.beta != 0.0:
            kl = kl_estimate(logps, inputs["ref_per_token_logps"], self.args.kl_estimator, self.args.kl_clamp)
            kl = kl * ratio if self.args.use_bias_correction_kl else kl  # [B, T]
            per_token = per_token + self.beta * kl  # [B, T]
        loss, policy_loss = self._plus_reduce(per_token, mask, inputs, mode)
        loss = self._plus_extra_terms(loss, policy_loss, entropies, mask, entropy_mask, aux_loss, mode)
        self._plus_log_loss_metrics(mode, kl, entropies, mask, ratio, advantages)
        return loss

    def _plus_masks(self, per_token, inputs, logps, entropies, mask, advantages):
        """TRL's optional token masks and the vLLM importance-sampling weight, in TRL's order."""
        if self.off_policy_mask_threshold is not None:
            old = inputs.get("old_per_token_logps")
            sampling = inputs.get("sampling_per_token_logps", logps.detach() if old is None else old)
            per_token = per_token * self.get_off_policy_mask(advantages, logps, sampling, mask,
                                                             self.off_policy_mask_threshold)  # [B, T]
        entropy_mask = None
        if self.top_entropy_quantile < 1.0:
            entropy_mask = self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)  # [B, T]
            per_token = per_token * entropy_mask
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token = per_token * inputs["importance_sampling_ratio"]  # [B, T]
        return per_token, entropy_mask

    def _plus_reduce(self, per_token, mask, inputs, mode):
        """Aggregate as loss_type says, scaled for gradient accumulation exactly as TRL does."""
        numerator, denominator = aggregate_parts(per_token, mask, MODE_FOR_LOSS_TYPE[self.loss_type],
                                                 self.max_completion_length)
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if self.loss_type == "dapo":  # denominator: active tokens of the whole accumulated batch, all processes
            denominator = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                denominator = denominator * accumulation / self.args.steps_per_generation
            loss = numerator / denominator
            return loss, loss.detach()
        loss = numerator / denominator.clamp(min=1.0)
        return loss / accumulation, loss.detach()

    def _plus_extra_terms(self, loss, policy_loss, entropies, mask, entropy_mask, aux_loss, mode):
        """TRL's fixed entropy bonus and MoE auxiliary loss (the adaptive entropy controller stays in TRL's loss)."""
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
        if self.entropy_coef != 0.0:
            active = mask if entropy_mask is None else mask * entropy_mask
            entropy = (entropies * active).sum() / active.sum().clamp(min=1.0) / accumulation
            loss = loss - self.entropy_coef * entropy
            self.log_metric(mode, "policy_loss", self.accelerator.gather(policy_loss).nanmean().item())
            if mode == "train" and self.accelerator.sync_gradients:
                self.log_metric(mode, "entropy_coef", self.entropy_coef)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / accumulation
            self.log_metric(mode, "aux_loss", self.accelerator.gather_for_metrics(aux_loss).mean().item())
        return loss

    def _plus_log_loss_metrics(self, mode, kl, entropies, mask, ratio, advantages):
        """TRL's kl / entropy / clip_ratio metrics plus kl/<estimator>, in one reduce and one gather."""
        with torch.no_grad():
            weight = mask.to(entropies.dtype)  # [B, T]
            if ratio.shape[-1] == 1 and advantages.shape[-1] > 1:  # sequence-level ρ, per-token Â (process)
                advantages = advantages[:, :1]  # [B, 1] Â_{i,0}, the sign of the whole completion's signal
            clip = clip_counts(ratio, advantages, mask, self.epsilon_low, self.epsilon_high)  # each [B]
            kl_sum = (kl * weight).sum() if kl is not None else weight.new_zeros(())
            local = torch.stack([kl_sum, (entropies * weight).sum(), weight.sum(), clip["low"].sum(),
                                 clip["high"].sum(), clip["region"].sum(), clip["count"].sum()]).float()
            kl_t, ent_t, tokens, low, high, region, clipped_count = self.accelerator.reduce(local, "sum").tolist()
            per_seq = torch.stack([clip["low"], clip["high"]], dim=1) / clip["count"].unsqueeze(1)  # [B, 2]
            per_seq = self.accelerator.gather(per_seq.float())  # [B_global, 2]
        if kl is not None:
            value = kl_t / max(tokens, 1.0)
            self.log_metric(mode, "kl", value)
            self.log_metric(mode, f"kl/{self.args.kl_estimator}", value)
        self.log_metric(mode, "entropy", ent_t / max(tokens, 1.0))
        clipped_count = max(clipped_count, 1.0)
        self.log_metric(mode, "clip_ratio/low_mean", low / clipped_count)
        self.log_metric(mode, "clip_ratio/high_mean", high / clipped_count)
        self.log_metric(mode, "clip_ratio/region_mean", region / clipped_count)
        low_min, high_max = torch.stack([nanmin(per_seq[:, 0]), nanmax(per_seq[:, 1])]).tolist()
        self.log_metric(mode, "clip_ratio/low_min", low_min)
        self.log_metric(mode, "clip_ratio/high_max", high_max)


def _copy_adapter(model, source: str, target: str) -> None:
    """Copy every parameter of PEFT adapter ``source`` into adapter ``target`` (same config)."""
    params = dict(model.named_parameters())
    pairs = [(params[name.replace(f".{source}.", f".{target}.")], p) for name, p in params.items() if f".{source}." in name]
    with torch.no_grad(), writable([t for pair in pairs for t in pair]):  # ZeRO-3: gathered, written back
        for target_param, param in pairs:
            target_param.copy_(param)
