"""Shared helpers for the trainer tests: CPU configs, a fixed rollout, a table reward, and independent oracles.

The oracles here are written from the papers' formulas with plain Python loops in float64; they import nothing
from trl_grpo_plus.algos on purpose.
"""

from __future__ import annotations

import math
import os
import re

import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is TRL-experimental; we use it as a fixture

PROMPT_LEN = 5
MAX_LEN = 8
# One fixed generation batch of 12 completions = 3 prompts x G=4 (group-major). Equal-length prompts, so no left
# padding (transformers derives positions from the sequence, not the mask); completions of varied lengths.
PROMPT_IDS = [[11, 12, 13, 14, 15], [21, 22, 23, 24, 25], [31, 32, 33, 34, 35]]
COMPLETION_IDS = [
    [40, 41, 42], [43, 44, 45, 46, 47, 48, 49], [50, 51], [52, 53, 54, 55, 56, 57, 58, 59],
    [60, 61, 62, 63], [64], [65, 66, 67, 68, 69, 70], [71, 72, 73, 74, 75],
    [80, 81, 82, 83, 84, 85, 86, 87], [88, 89, 90], [91, 92, 93, 94, 95, 96], [97, 98],
]
# group 0: spread rewards; group 1: all equal (zero variance); group 2: one None (excluded)
REWARDS = [1.0, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, None, 1.0, 3.0]


class FixedRollout:
    """rollout_func returning the fixed table above, by position in the (group-major) generation batch."""

    def __init__(self, prompt_ids=PROMPT_IDS, completion_ids=COMPLETION_IDS, group_size=4):
        self.prompt_ids, self.completion_ids, self.group_size = prompt_ids, completion_ids, group_size

    def __call__(self, prompts, trainer):
        n = len(prompts)
        rows = [i % len(self.completion_ids) for i in range(n)]
        return {
            "prompt_ids": [list(self.prompt_ids[(r // self.group_size) % len(self.prompt_ids)]) for r in rows],
            "completion_ids": [list(self.completion_ids[r]) for r in rows],
            "logprobs": None,
        }


class TableReward:
    """Reward function returning REWARDS by position (the batch is one fixed generation batch)."""

    __name__ = "table_reward"

    def __init__(self, table=REWARDS):
        self.table = table

    def __call__(self, prompts, completions, **kwargs):
        return [self.table[i % len(self.table)] for i in range(len(prompts))]


class LengthReward:
    """A deterministic reward of the completion text: its length modulo 5 (ties are common)."""

    __name__ = "length_reward"

    def __call__(self, prompts, completions, **kwargs):
        return [float(len(c) % 5) for c in completions]


class CharStepsReward:
    """Step rewards of the completion text: a step every 4 characters (and one at the end), each worth
    (code point of its last character mod 3) / 2. Deterministic, so a test can recompute the steps from the text."""

    __name__ = "char_steps"

    @staticmethod
    def steps(text):
        ends = list(range(4, len(text), 4)) + ([len(text)] if text else [])
        return [(end, (ord(text[end - 1]) % 3) / 2) for end in ends]

    def __call__(self, prompts, completions, **kwargs):
        return [self.steps(c) for c in completions]


class EvenPromptsConstant:
    """Reward 1.0 for every completion of an even-numbered prompt ("Question 4: ..."; an all-equal group, no signal);
    for odd prompts the sum of the completion's code points mod 7 (varied)."""

    __name__ = "even_constant"

    def __call__(self, prompts, completions, **kwargs):
        out = []
        for prompt, completion in zip(prompts, completions):
            index = int(re.search(r"Question (\d+)", prompt).group(1))
            out.append(1.0 if index % 2 == 0 else float(sum(map(ord, completion)) % 7))
        return out


def float64_copy(config_source, model):
    """A plain float64 Qwen2 (no TRL fused head) with ``model``'s weights, for the oracles."""
    from transformers import Qwen2ForCausalLM

    copy = Qwen2ForCausalLM(config_source.config).to(torch.float64)
    copy.load_state_dict(model.state_dict())
    return copy


def completion_rows(inputs):
    """Indices into COMPLETION_IDS of the completions of a micro-batch (they are all distinct)."""
    rows = []
    for ids, mask in zip(inputs["completion_ids"].tolist(), inputs["completion_mask"].tolist()):
        rows.append(COMPLETION_IDS.index([t for t, m in zip(ids, mask) if m]))
    return rows


def prompt_dataset(n: int):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"Question {i}: what is {i} + {i}?" for i in range(n)]})


def cpu_config(cls, output_dir, **overrides):
    """A small, fast, deterministic CPU config of ``cls`` (GRPOConfig or GRPOPlusConfig)."""
    values = dict(
        output_dir=str(output_dir),
        bf16=False,
        report_to=[],
        gradient_checkpointing=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        max_completion_length=MAX_LEN,
        num_generations=4,
        per_device_train_batch_size=4,
        max_steps=2,
        seed=0,
        learning_rate=1e-2,
    )
    values.update(overrides)
    return cls(**values)


# ---- independent float64 oracle of the DeepSeekMath objective --------------------------------------------------------
def oracle_advantages(rewards, group_size, std, scope="group", eps=1e-4):
    """Naive loop: Â_i = (r_i − mean_g) / (std + eps); None/NaN → 0; all-equal group → 0."""
    def is_valid(r):
        return r is not None and not math.isnan(r)

    def spread(values, ddof):
        m = sum(values) / len(values)
        return math.sqrt(sum((v - m) ** 2 for v in values) / max(len(values) - ddof, 1))

    ddof = {"sample": 1, "population": 0}.get(std)
    all_valid = [r for r in rewards if is_valid(r)]
    out = []
    for k in range(0, len(rewards), group_size):
        group = rewards[k : k + group_size]
        valid = [r for r in group if is_valid(r)]
        flat = len(valid) < 2 or max(valid) == min(valid)
        mean = sum(valid) / len(valid) if valid else 0.0
        sd = None if std == "none" else spread(valid if scope == "group" else all_valid, ddof) if valid else 0.0
        for r in group:
            if not is_valid(r) or flat:
                out.append(0.0)
            else:
                out.append((r - mean) if sd is None else (r - mean) / (sd + eps))
    return out


def oracle_token_logps(model, prompt, completion):
    """log π(o_t | q, o_<t) for each completion token, from a plain full-logits forward pass (no padding)."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0]  # [P+C, V]
    logps = torch.log_softmax(logits, dim=-1)
    return torch.stack([logps[len(prompt) + t - 1, tok] for t, tok in enumerate(completion)])  # [C]


def oracle_kl(logp, ref_logp, estimator, clamp=None):
    d = ref_logp - logp
    value = {"k1": -d, "k2": 0.5 * d * d, "k3": torch.exp(d) - d - 1}[estimator]
    return value if clamp is None else torch.clamp(value, -clamp, clamp)


def oracle_process_advantages(steps, group_size, std, eps=1e-4):
    """Naive loops of DeepSeekMath §4.1.3. steps[i] = [(end_token, reward), ...] of completion i (group-major).

    r̃ = (r − mean(R)) / (std(R) + eps) over every step R of the group (all equal or < 2 steps → 0);
    Â_{i,t} = Σ_{steps j of i with end_token_j ≥ t} r̃_j. Returns per-completion lists of per-token advantages
    (as long as the last step's token + 1; later tokens are 0)."""
    out = []
    for k in range(0, len(steps), group_size):
        group = steps[k : k + group_size]
        rewards = [r for completion in group for _, r in completion]
        flat = len(rewards) < 2 or max(rewards) == min(rewards)
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        ddof = {"sample": 1, "population": 0}.get(std)
        sd = None if std == "none" or not rewards else \
            math.sqrt(sum((r - mean) ** 2 for r in rewards) / max(len(rewards) - ddof, 1))
        for completion in group:
            length = max((t for t, _ in completion), default=-1) + 1
            adv = [0.0] * length
            for token, r in completion:
                r_tilde = 0.0 if flat else (r - mean) if sd is None else (r - mean) / (sd + eps)
                for t in range(token + 1):
                    adv[t] += r_tilde
            out.append(adv)
    return out


def oracle_loss(policy, old, ref, prompts, completions, advantages, *, loss_type, beta, kl_estimator, eps_low,
                eps_high, max_len, kl_clamp=None, kl_times_ratio=False, is_weights=None, sequence_ratio=False):
    """−J(θ): per token −min(ρA, clip(ρ)A) + β·KL, aggregated per loss_type, as written in the papers.

    advantages[i]: a number (outcome) or a list of per-token numbers (process supervision; missing tokens are 0).
    kl_times_ratio: weight the KL by ρ (DeepSeek-V3.2's correction, TRL's use_bias_correction_kl).
    is_weights[i][t]: the vLLM importance-sampling weight multiplying the policy term (TRL's correction).
    sequence_ratio: one ρ_i = exp(mean_t log π_θ/π_old) for every token of o_i (GSPO-style sequence level)."""
    per_seq_sums, per_seq_lens, clipped = [], [], 0
    for i, (prompt, completion, seq_adv) in enumerate(zip(prompts, completions, advantages)):
        logp = oracle_token_logps(policy, prompt, completion)
        with torch.no_grad():
            old_logp = oracle_token_logps(old, prompt, completion)
            ref_logp = oracle_token_logps(ref, prompt, completion)
        total = 0.0
        for t in range(len(completion)):
            if isinstance(seq_adv, (list, tuple)):
                adv = seq_adv[t] if t < len(seq_adv) else 0.0
            else:
                adv = seq_adv
            rho = torch.exp((logp - old_logp).mean() if sequence_ratio else logp[t] - old_logp[t])
            clipped_rho = torch.clamp(rho, 1 - eps_low, 1 + eps_high)
            term = -torch.minimum(rho * adv, clipped_rho * adv)
            if is_weights is not None:
                term = term * is_weights[i][t]
            clipped += int(bool((rho < 1 - eps_low and adv < 0) or (rho > 1 + eps_high and adv > 0)))
            if beta:
                kl = oracle_kl(logp[t], ref_logp[t], kl_estimator, kl_clamp)
                term = term + beta * (rho * kl if kl_times_ratio else kl)
            total = total + term
        per_seq_sums.append(total)
        per_seq_lens.append(len(completion))
    n = len(per_seq_sums)
    if loss_type == "grpo":
        loss = sum(s / length for s, length in zip(per_seq_sums, per_seq_lens)) / n
    elif loss_type in ("bnpo", "dapo"):
        loss = sum(per_seq_sums) / sum(per_seq_lens)
    elif loss_type == "dr_grpo":
        loss = sum(per_seq_sums) / (n * max_len)
    else:
        raise ValueError(loss_type)
    return loss, clipped


def perturb_(model, scale, seed):
    """Add scale·std(p)·N(0, 1) noise to every parameter p of ``model``, in place (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(scale * param.std().nan_to_num(1.0) * noise)


def fixed_batch_trainer(model_dir, output_dir, dtype=None, perturb=0.8, ref_perturb=None, reward=None, **overrides):
    """A GRPOPlusTrainer on the fixed 12-completion batch, the batch's inputs, and the policy perturbed after
    generation (so that ρ ≠ 1 and the KL is non-zero). ``overrides`` go to GRPOPlusConfig.

    ref_perturb: also perturb the reference model (another seed) and recompute the batch's reference log-probs, so
    that π_ref ≠ π_old (a KL taken against the wrong one then shows). ``reward``: the reward function (TableReward).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32)
    values = dict(per_device_train_batch_size=12, num_iterations=2, beta=0.04, epsilon_high=0.28)
    values.update(overrides)
    trainer = GRPOPlusTrainer(model=model, reward_funcs=reward or TableReward(),
                              args=cpu_config(GRPOPlusConfig, output_dir, **values), train_dataset=prompt_dataset(3),
                              processing_class=tokenizer, rollout_func=FixedRollout())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by Trainer's loop
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    perturb_(trainer.model, perturb, seed=1)
    if ref_perturb is not None:
        perturb_(trainer.ref_model, ref_perturb, seed=2)
        for chunk in trainer._buffered_inputs:  # every micro-batch of the generation batch
            with torch.no_grad():
                chunk["ref_per_token_logps"] = trainer.per_token_logps(trainer.ref_model, chunk)[0]
    return trainer, inputs
