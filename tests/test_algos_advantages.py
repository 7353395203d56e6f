"""Group-relative advantages, checked against values derived by hand and against a naive loop."""

import math

import pytest
import torch
from grpo_testlib import oracle_advantages

from trl_grpo_plus.algos.advantages import advantage_stats, constant_groups, group_advantages

NAN = float("nan")


def adv(values, group_size=None, **kwargs):
    rewards = torch.tensor(values, dtype=torch.float64)
    return group_advantages(rewards, group_size or len(values), **kwargs)


# [10, 2, 4, 8]: mean 6, deviations (4, −4, −2, 2), Σd² = 40.
#   population σ = √(40/4) = √10 = 3.1623 → ±4/√10 = ±1.2649, ±2/√10 = ±0.6325
#   sample σ = √(40/3) = 3.6515           → ±4/3.6515 = ±1.0954, ±2/3.6515 = ±0.5477
# [1, 0, 1, 0]: mean 0.5, deviations ±0.5, Σd² = 1.
#   sample σ = √(1/3) = 0.57735 → ±0.5/0.57735 = ±0.8660;  population σ = √(1/4) = 0.5 → ±1.0
@pytest.mark.parametrize(
    ("rewards", "std", "expected"),
    [
        ([10, 2, 4, 8], "population", [1.2649, -1.2649, -0.6325, 0.6325]),
        ([10, 2, 4, 8], "sample", [1.0954, -1.0954, -0.5477, 0.5477]),
        ([1, 0, 1, 0], "sample", [0.8660, -0.8660, 0.8660, -0.8660]),
        ([1, 0, 1, 0], "population", [1.0, -1.0, 1.0, -1.0]),
        ([10, 2, 4, 8], "none", [4.0, -4.0, -2.0, 2.0]),
    ],
)
def test_hand_derived_values(rewards, std, expected):
    torch.testing.assert_close(adv(rewards, std=std, eps=0.0), torch.tensor(expected, dtype=torch.float64),
                               rtol=0, atol=5e-5)


def test_epsilon_enters_the_denominator():
    # population σ = √10; with ε = 0.5: 4 / (√10 + 0.5)
    out = adv([10, 2, 4, 8], std="population", eps=0.5)
    assert out[0].item() == pytest.approx(4 / (math.sqrt(10) + 0.5), abs=1e-12)


@pytest.mark.parametrize("std", ["sample", "population", "none"])
@pytest.mark.parametrize("value", [0.1, 3.0, -7.25, 1e6])
def test_all_equal_group_is_exactly_zero(std, value):
    # 0.1 * 4 / 4 != 0.1 in floating point: the zero must not come from subtraction
    out = adv([value] * 4, std=std)
    assert torch.equal(out, torch.zeros(4, dtype=torch.float64))


def test_nan_rewards_are_excluded_and_get_zero():
    # group [0, NaN, 1, 3]: valid (0, 1, 3), mean 4/3, sample σ = √((16/9 + 1/9 + 25/9) / 2) = √(7/3)
    out = adv([0, NAN, 1, 3], std="sample", eps=0.0)
    sigma = math.sqrt(7 / 3)
    expected = [(0 - 4 / 3) / sigma, 0.0, (1 - 4 / 3) / sigma, (3 - 4 / 3) / sigma]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("group", [[NAN, NAN, NAN, NAN], [NAN, 5.0, NAN, NAN], [2.0, NAN, 2.0, NAN]])
def test_degenerate_groups_give_zero_not_nan(group):
    for std in ("sample", "population", "none"):
        assert torch.equal(adv(group, std=std), torch.zeros(4, dtype=torch.float64))


def test_groups_are_independent_and_batch_scope_uses_the_batch_std():
    rewards = [1, 0, 1, 0, 10, 2, 4, 8]
    per_group = adv(rewards, 4, std="population", eps=0.0)
    torch.testing.assert_close(per_group[:4], adv([1, 0, 1, 0], std="population", eps=0.0))
    # batch scope: group means (0.5 and 6), one σ over all 8 rewards (around the batch mean 3.25)
    batch = adv(rewards, 4, std="population", scope="batch", eps=0.0)
    sigma = torch.tensor(rewards, dtype=torch.float64).std(correction=0)
    torch.testing.assert_close(batch[4:], (torch.tensor([10, 2, 4, 8.0], dtype=torch.float64) - 6) / sigma)


@pytest.mark.parametrize("std", ["sample", "population", "none"])
@pytest.mark.parametrize("scope", ["group", "batch"])
def test_matches_naive_loop_on_random_rewards(std, scope):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 4, (48,), generator=generator).double()
    rewards[torch.rand(48, generator=generator) < 0.15] = NAN
    expected = oracle_advantages([None if math.isnan(r) else r for r in rewards.tolist()], 6, std, scope)
    torch.testing.assert_close(group_advantages(rewards, 6, std, scope), torch.tensor(expected, dtype=torch.float64),
                               rtol=0, atol=1e-12)


def test_float32_in_float32_out():
    assert adv([1.0, 2.0]).dtype == torch.float64
    assert group_advantages(torch.tensor([1.0, 2.0]), 2).dtype == torch.float32


def test_stats_count_flat_groups_and_excluded_samples():
    rewards = torch.tensor([1, 0, 1, 0, 2, 2, 2, 2, NAN, 1, NAN, NAN])
    stats = advantage_stats(rewards, 4)
    assert stats["zero_variance_groups"].item() == 2  # the all-2 group and the one-valid-reward group
    assert stats["groups"].item() == 3
    assert stats["excluded"].item() == 3
    assert constant_groups(rewards, 4).tolist() == [False, True, True]


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(std="bessel"), "'sample', 'population', 'none'"),
    (dict(scope="global"), "'group', 'batch'"),
])
def test_unknown_names_list_the_valid_ones(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adv([1.0, 2.0], **kwargs)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="cannot be split into groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 4), 4)
