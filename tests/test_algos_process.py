"""Process-supervision advantages (DeepSeekMath §4.1.3): hand-derived values, the outcome special case, edge cases."""

import math

import pytest
import torch

from trl_grpo_plus.algos.advantages import group_advantages
from trl_grpo_plus.algos.process import normalized_step_rewards, process_advantages, token_advantages

F64 = torch.float64


def _steps(*triples):
    sample, token, reward = zip(*triples)
    return torch.tensor(reward, dtype=F64), torch.tensor(sample), torch.tensor(token)


def test_hand_derived_two_outputs():
    # G = 2, one group. Output 0: steps ending at tokens 1 and 3 with rewards 1, 0; output 1: one step at token 2, 1.
    # R = (1, 0, 1): mean 2/3, population σ = sqrt((1/9 + 4/9 + 1/9)/3) = sqrt(2/9) = √2/3
    # r̃ = (1/3, −2/3, 1/3) / (√2/3) = (1/√2, −√2, 1/√2)
    # Â_0,t: t ≤ 1 → r̃(1) + r̃(3) = 1/√2 − √2 = −1/√2;  t = 2, 3 → −√2
    # Â_1,t: t ≤ 2 → 1/√2;  t = 3 → 0 (after its last step)
    reward, sample, token = _steps((0, 1, 1.0), (0, 3, 0.0), (1, 2, 1.0))
    adv = process_advantages(reward, sample, token, group_size=2, num_samples=2, length=4, std="population", eps=0.0)
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[-r, -r, -2 * r, -2 * r], [r, r, r, 0.0]], dtype=F64)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


def test_sample_std_and_eps():
    # same steps, sample σ = sqrt((1/9 + 4/9 + 1/9)/2) = 1/√3; eps = 0.5
    reward, sample, token = _steps((0, 1, 1.0), (0, 3, 0.0), (1, 2, 1.0))
    r_tilde = normalized_step_rewards(reward, sample // 2, 1, std="sample", eps=0.5)
    sigma = 1 / math.sqrt(3)
    torch.testing.assert_close(r_tilde, torch.tensor([1 / 3, -2 / 3, 1 / 3], dtype=F64) / (sigma + 0.5))
    plain = normalized_step_rewards(reward, sample // 2, 1, std="none")
    torch.testing.assert_close(plain, torch.tensor([1 / 3, -2 / 3, 1 / 3], dtype=F64))


def test_groups_are_normalised_separately_and_batch_scope_pools_the_std():
    # group 0 (rows 0, 1): rewards 0, 2; group 1 (rows 2, 3): rewards 10, 10, 14 (row 2 has two steps)
    reward, sample, token = _steps((0, 0, 0.0), (1, 0, 2.0), (2, 0, 10.0), (2, 1, 10.0), (3, 1, 14.0))
    group = normalized_step_rewards(reward, sample // 2, 2, std="population", eps=0.0)
    # group 0: mean 1, σ 1 → (−1, 1); group 1: mean 34/3, σ = sqrt(((4/3)²·2 + (8/3)²)/3) = sqrt(32/9)
    s1 = math.sqrt(32 / 9)
    torch.testing.assert_close(group, torch.tensor([-1, 1, -4 / 3 / s1, -4 / 3 / s1, 8 / 3 / s1], dtype=F64))
    batch = normalized_step_rewards(reward, sample // 2, 2, std="population", scope="batch", eps=0.0)
    pooled = reward.std(unbiased=False).item()  # σ over all five steps; the means stay per group
    torch.testing.assert_close(batch, torch.tensor([-1, 1, -4 / 3, -4 / 3, 8 / 3], dtype=F64) / pooled)


def test_flat_groups_and_single_steps_give_exact_zero():
    reward, sample, token = _steps((0, 0, 1.0), (0, 2, 1.0), (1, 1, 1.0), (2, 0, 5.0))  # group 0 flat; group 1 one step
    adv = process_advantages(reward, sample, token, group_size=2, num_samples=4, length=3)
    assert torch.equal(adv, torch.zeros(4, 3, dtype=F64))


@pytest.mark.parametrize("std", ["sample", "population", "none"])
def test_one_step_at_the_last_token_is_outcome_supervision(std):
    # rewards of 3 groups of 4 (one None = no step), each completion's step at its last token
    rewards = [1.0, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, None, 1.0, 3.0]
    lengths = [3, 7, 2, 8, 4, 1, 6, 5, 8, 3, 6, 2]
    steps = [(i, lengths[i] - 1, r) for i, r in enumerate(rewards) if r is not None]
    reward, sample, token = _steps(*steps)
    adv = process_advantages(reward, sample, token, group_size=4, num_samples=12, length=8, std=std)
    outcome = group_advantages(torch.tensor([math.nan if r is None else r for r in rewards], dtype=F64), 4, std=std)
    for i, n in enumerate(lengths):
        torch.testing.assert_close(adv[i, :n], outcome[i].expand(n), rtol=0, atol=1e-12)
        assert torch.equal(adv[i, n:], torch.zeros(8 - n, dtype=F64))


def test_token_advantages_builds_one_processes_rows_and_checks_ranges():
    r_tilde = torch.tensor([1.0, 2.0, 4.0], dtype=F64)
    adv = token_advantages(r_tilde, torch.tensor([0, 0, 1]), torch.tensor([0, 2, 1]), num_samples=2, length=3)
    torch.testing.assert_close(adv, torch.tensor([[3.0, 2.0, 2.0], [4.0, 4.0, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="step_token out of range"):
        token_advantages(r_tilde, torch.tensor([0, 0, 1]), torch.tensor([0, 3, 1]), num_samples=2, length=3)
    with pytest.raises(ValueError, match="finite"):
        normalized_step_rewards(torch.tensor([math.nan]), torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="'sample', 'population', 'none'"):
        normalized_step_rewards(r_tilde, torch.tensor([0, 0, 0]), 1, std="bessel")
