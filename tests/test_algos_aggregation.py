"""Loss aggregation modes, derived by hand, and their composability across processes / micro-batches."""

import pytest
import torch

from trl_grpo_plus.algos.aggregation import aggregate, aggregate_parts

# two sequences: lengths 2 and 4 (mask), per-token losses
LOSS = torch.tensor([[1.0, 3.0, 99.0, 99.0], [2.0, 2.0, 2.0, 6.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])


def test_sequence_mean_is_deepseekmath():
    # 1/G Σ_i 1/|o_i| Σ_t: ((1+3)/2 + (2+2+2+6)/4) / 2 = (2 + 3) / 2 = 2.5
    assert aggregate(LOSS, MASK, "sequence").item() == pytest.approx(2.5)


def test_token_mean():
    # Σ / Σ|o_i| = (4 + 12) / 6 = 2.6667
    assert aggregate(LOSS, MASK, "token").item() == pytest.approx(16 / 6)


def test_constant_normaliser_is_dr_grpo():
    # Σ / (G · L_max) = 16 / (2 · 8) = 1.0
    assert aggregate(LOSS, MASK, "constant", max_len=8).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_len"):
        aggregate(LOSS, MASK, "constant")


def test_per_sequence_losses_broadcast():
    per_seq = torch.tensor([[1.0], [3.0]])
    assert aggregate(per_seq, MASK, "token").item() == pytest.approx((1 * 2 + 3 * 4) / 6)


@pytest.mark.parametrize("mode", ["sequence", "token", "constant"])
def test_parts_compose_across_shards(mode):
    # splitting the batch (processes or accumulation micro-batches) and summing the parts equals the whole batch
    generator = torch.Generator().manual_seed(0)
    loss = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    mask = (torch.rand(6, 5, generator=generator) < 0.7).long()
    mask[:, 0] = 1
    parts = [aggregate_parts(loss[i : i + 2], mask[i : i + 2], mode, 5) for i in (0, 2, 4)]
    numerator, denominator = (sum(p[k] for p in parts) for k in (0, 1))
    torch.testing.assert_close(numerator / denominator, aggregate(loss, mask, mode, 5))


def test_empty_sequences_do_not_divide_by_zero():
    loss = torch.ones(2, 3)
    mask = torch.tensor([[0, 0, 0], [1, 1, 0]])
    assert aggregate(loss, mask, "sequence").item() == pytest.approx(0.5)
    assert aggregate(loss, torch.zeros(2, 3), "token").item() == 0.0


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'sequence', 'token', 'constant'"):
        aggregate(LOSS, MASK, "mean")
