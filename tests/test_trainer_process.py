"""Process supervision in the trainer (DeepSeekMath §4.1.3): step rewards → per-token advantages → the loss.

The fixed 12-completion batch of grpo_testlib gets step rewards given as (token, reward) pairs; the reward function
turns them into (end_char_offset, reward) by decoding, the trainer maps them back to tokens. The loss and its
gradients are checked against an independent float64 loop (oracle_process_advantages + oracle_loss) for every
aggregation, with the vLLM importance-sampling weight, and against outcome supervision when every reward is scalar.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from grpo_testlib import (COMPLETION_IDS, MAX_LEN, PROMPT_IDS, FixedRollout, TableReward, completion_rows, cpu_config,
                          fixed_batch_trainer, float64_copy, oracle_loss, oracle_process_advantages, prompt_dataset)

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
from trl_grpo_plus.step_rewards import step_end_tokens

EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.04
# (end token, reward) steps of each completion of the fixed batch; a float is an outcome reward, None unscorable.
# group 0: mixed steps; group 1: every step 1.0 (flat → 0); group 2: steps, an unscorable one and a scalar.
STEPS = [
    [(0, 1.0), (2, 0.0)], [(3, 1.0), (6, 1.0)], [(1, 0.0)], [(1, 0.5), (4, 1.0), (7, 0.0)],
    [(3, 1.0)], [(0, 1.0)], [(2, 1.0), (5, 1.0)], [(4, 1.0)],
    [(7, 2.0)], None, [(0, 0.0), (5, 3.0)], 1.5,
]


class StepTableReward:
    """Returns STEPS by position, with each step's end token turned into the char offset of that token's end."""

    __name__ = "step_table"

    def __init__(self, tokenizer, table=STEPS):
        self.tokenizer, self.table = tokenizer, table

    def offset(self, ids, token):
        return len(self.tokenizer.decode(ids[: token + 1], skip_special_tokens=True))

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        out = []
        for i, ids in enumerate(completion_ids):
            entry = self.table[i % len(self.table)]
            out.append([(self.offset(ids, t), r) for t, r in entry] if isinstance(entry, list) else entry)
        return out


def _oracle_steps(table=STEPS):
    steps = []
    for i, entry in enumerate(table):
        if entry is None:
            steps.append([])
        elif isinstance(entry, list):
            steps.append(entry)
        else:
            steps.append([(len(COMPLETION_IDS[i]) - 1, entry)])
    return steps


@pytest.fixture(scope="module")
def f64(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for ids in COMPLETION_IDS:  # precondition: every token adds text, so offsets name one token each
        lengths = [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]
        assert all(a < b for a, b in zip([0] + lengths, lengths)), ids
    return tokenizer, AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)


def _loss_and_grads(trainer, inputs):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("loss_type", "std"), list(itertools.product(["grpo", "bnpo", "dapo", "dr_grpo"],
                                                                      ["sample", "population", "none"])))
def test_step_rewards_loss_and_gradients_match_float64_oracle(f64, tmp_path, loss_type, std):
    _check_against_oracle(f64, tmp_path, loss_type=loss_type, std=std)


def test_step_rewards_with_the_vllm_importance_sampling_weight(f64, tmp_path):
    _check_against_oracle(f64, tmp_path, loss_type="dapo", std="sample", vllm_weights=True)


def test_step_rewards_with_a_sequence_level_ratio(f64, tmp_path):
    from grpo_testlib import oracle_token_logps

    _, initial = f64
    trainer = _check_against_oracle(f64, tmp_path, loss_type="grpo", std="sample", sequence_ratio=True)
    # clip fractions count sequences (one ρ_i each), signed by the completion's whole signal Â_{i,0}
    policy, advantages = float64_copy(initial, trainer.model), oracle_process_advantages(_oracle_steps(), 4, "sample")
    low = high = 0
    with torch.no_grad():
        for i, completion in enumerate(COMPLETION_IDS):
            prompt = PROMPT_IDS[i // 4]
            rho = torch.exp((oracle_token_logps(policy, prompt, completion)
                             - oracle_token_logps(initial, prompt, completion)).mean()).item()
            a0 = advantages[i][0] if advantages[i] else 0.0
            low += rho < 1 - EPS_LOW and a0 < 0
            high += rho > 1 + EPS_HIGH and a0 > 0
    logs = trainer._metrics["train"]
    assert low + high > 0
    assert logs["clip_ratio/low_mean"][-1] == pytest.approx(low / 12)
    assert logs["clip_ratio/high_mean"][-1] == pytest.approx(high / 12)


def _check_against_oracle(f64, tmp_path, *, loss_type, std, vllm_weights=False, sequence_ratio=False):
    tokenizer, initial = f64
    cfg = dict(loss_type=loss_type, process_supervision=True, use_bias_correction_kl=False)
    if sequence_ratio:  # a larger perturbation, so that some sequence-mean ratios leave the clip range
        cfg.update(importance_sampling_level="sequence", perturb=3.0)
    cfg.update(dict(scale_rewards="none") if std == "none" else dict(std_estimator=std))
    trainer, inputs = fixed_batch_trainer(initial.config._name_or_path, tmp_path, dtype=torch.float64, epsilon=EPS_LOW,
                                          epsilon_high=EPS_HIGH, beta=BETA, reward=StepTableReward(tokenizer), **cfg)
    assert inputs["advantages"].shape == inputs["completion_ids"].shape  # one advantage per token
    rows = completion_rows(inputs)
    weights = None
    if vllm_weights:  # as TRL's vLLM path would attach it: one weight per token (here a fixed pattern)
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
        w = 0.5 + 0.1 * torch.arange(inputs["completion_ids"].numel(), dtype=torch.float64)
        inputs["importance_sampling_ratio"] = (w.view_as(inputs["completion_ids"]) % 1.3) + 0.2
        weights = inputs["importance_sampling_ratio"].tolist()
    loss, grads = _loss_and_grads(trainer, inputs)

    advantages = oracle_process_advantages(_oracle_steps(), 4, std)
    policy = float64_copy(initial, trainer.model)
    expected, clipped = oracle_loss(policy, initial, initial, [PROMPT_IDS[i // 4] for i in rows],
                                    [COMPLETION_IDS[i] for i in rows], [advantages[i] for i in rows],
                                    loss_type=loss_type, beta=BETA, kl_estimator="k3", eps_low=EPS_LOW,
                                    eps_high=EPS_HIGH, max_len=MAX_LEN, is_weights=weights,
                                    sequence_ratio=sequence_ratio)
    expected.backward()
    assert clipped > 0
    assert abs(loss.item() - expected.item()) <= 1e-6, (loss.item(), expected.item())
    for name, param in policy.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=0, atol=1e-6, msg=name)
    # the buffered per-token advantages themselves, row by row
    for r, row in enumerate(rows):
        adv = advantages[row] + [0.0] * (inputs["advantages"].shape[1] - len(advantages[row]))
        torch.testing.assert_close(inputs["advantages"][r], torch.tensor(adv, dtype=torch.float64), rtol=0, atol=1e-9)
    return trainer


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_scalar_rewards_under_process_supervision_are_outcome_supervision(f64, tmp_path, loss_type):
    _, initial = f64
    results = []
    for process in (False, True):
        trainer, inputs = fixed_batch_trainer(initial.config._name_or_path, tmp_path / str(process),
                                              dtype=torch.float64, loss_type=loss_type, process_supervision=process,
                                              reward=TableReward())
        results.append(_loss_and_grads(trainer, inputs))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(loss_a.item() - loss_b.item()) <= 1e-12
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=0, atol=1e-12)


def test_mu_epochs_keep_each_rows_per_token_advantages(f64, tiny_model_dir, tmp_path):
    # μ = 2 epochs, mini-batches re-drawn every epoch, two optimizer steps per generation batch: every training pass
    # must see each completion with its own per-token advantages
    tokenizer, _ = f64
    args = cpu_config(GRPOPlusConfig, tmp_path, per_device_train_batch_size=6, steps_per_generation=2,
                      num_iterations=2, shuffle_each_iteration=True, process_supervision=True, beta=0.04,
                      std_estimator="population", max_steps=4, loss_type="dapo")
    trainer = GRPOPlusTrainer(model=tiny_model_dir, reward_funcs=StepTableReward(tokenizer), args=args,
                              train_dataset=prompt_dataset(3), processing_class=tokenizer, rollout_func=FixedRollout())
    expected = oracle_process_advantages(_oracle_steps(), 4, "population")
    seen = []
    original = trainer.per_token_logps

    def record(model, inputs, *a, **k):
        if torch.is_grad_enabled():
            for r, row in enumerate(completion_rows(inputs)):
                width = inputs["advantages"].shape[1]
                want = torch.tensor(expected[row] + [0.0] * (width - len(expected[row])), dtype=torch.float32)
                torch.testing.assert_close(inputs["advantages"][r], want, rtol=0, atol=1e-6)
                seen.append(row)
        return original(model, inputs, *a, **k)

    trainer.per_token_logps = record
    trainer.train()
    assert sorted(seen) == sorted(list(range(12)) * 2)  # every completion once per epoch
    logs = [log for log in trainer.state.log_history if "steps/per_completion" in log]
    assert logs and logs[0]["steps/per_completion"] == pytest.approx(17 / 12)  # 17 steps in STEPS (None: none)


def test_step_rewards_without_the_flag_are_refused_and_bad_steps_named(f64, tmp_path):
    tokenizer, initial = f64
    with pytest.raises(ValueError, match="set process_supervision=True"):
        fixed_batch_trainer(initial.config._name_or_path, tmp_path / "a", reward=StepTableReward(tokenizer))
    bad = [[(2, 1.0), (1, 0.0)]] + [1.0] * 11  # token 1 ends before token 2: offsets must increase
    with pytest.raises(ValueError, match=r"'step_table' returned an invalid step \(\d+, 0.0\) for completion 0"):
        fixed_batch_trainer(initial.config._name_or_path, tmp_path / "b", process_supervision=True,
                            reward=StepTableReward(tokenizer, bad))


def test_step_end_tokens_maps_offsets_and_fails_closed():
    pieces = ["ab", "c", "", "de", "f"]  # token texts; the empty one adds nothing

    def decode(ids):
        return "".join(pieces[i] for i in ids)

    ids = [0, 1, 2, 3, 4]  # text "abcdef"
    assert step_end_tokens(decode, ids, "abcdef", [1, 2, 3, 5, 6, 99]) == [0, 0, 1, 3, 4, 4]
    # a text that sits inside the decoding (e.g. after a prefix the template adds): offsets shifted
    assert step_end_tokens(decode, ids, "cdef", [1, 3]) == [1, 3]
    assert step_end_tokens(decode, ids, "xyz", [1]) is None  # not found: no guess
    assert step_end_tokens(decode, [], "", [1]) is None
