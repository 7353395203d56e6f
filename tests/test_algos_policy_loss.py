"""Clipped surrogate and clip counts, derived by hand; algos imports no trl / transformers / accelerate."""

import subprocess
import sys

import torch

from trl_grpo_plus.algos.policy_loss import clip_counts, clipped_surrogate


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([[0.5, 1.0, 1.5, 1.5]])
    adv_pos = torch.tensor([[2.0]])
    # A > 0: −min(ρA, clip(ρ, 0.8, 1.28)A) → ρ=0.5: −min(1, 1.6) = −1;  1.0: −2;  1.5: −min(3, 2.56) = −2.56
    torch.testing.assert_close(clipped_surrogate(ratio, adv_pos, 0.2, 0.28),
                               torch.tensor([[-1.0, -2.0, -2.56, -2.56]]))
    # A < 0: ρ=0.5: −min(−1, −1.6) = 1.6 (clip binds);  1.0: 2;  1.5: −min(−3, −2.56) = 3 (no clip on this side)
    torch.testing.assert_close(clipped_surrogate(ratio, -adv_pos, 0.2, 0.28),
                               torch.tensor([[1.6, 2.0, 3.0, 3.0]]))


def test_gradient_vanishes_only_where_the_clip_binds():
    ratio = torch.tensor([[0.5, 1.0, 1.5]], requires_grad=True)
    clipped_surrogate(ratio, torch.tensor([[1.0]]), 0.2, 0.2).sum().backward()
    torch.testing.assert_close(ratio.grad, torch.tensor([[-1.0, -1.0, 0.0]]))


def test_delta_caps_the_unclipped_ratio():
    # A < 0, ρ = 3: −min(3·(−1), 1.2·(−1)) = 3; with δ = 2: −min(2·(−1), −1.2) = 2
    ratio, adv = torch.tensor([[3.0]]), torch.tensor([[-1.0]])
    assert clipped_surrogate(ratio, adv, 0.2, 0.2).item() == 3.0
    assert clipped_surrogate(ratio, adv, 0.2, 0.2, delta=2.0).item() == 2.0


def test_clip_counts_per_sequence():
    ratio = torch.tensor([[0.5, 1.5, 1.0], [0.5, 1.5, 1.0]])
    adv = torch.tensor([[-1.0], [1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    counts = clip_counts(ratio, adv, mask, 0.2, 0.2)
    assert counts["low"].tolist() == [1.0, 0.0]  # ρ=0.5 with A<0
    assert counts["high"].tolist() == [0.0, 1.0]  # ρ=1.5 with A>0
    assert counts["region"].tolist() == [1.0, 1.0]
    assert counts["count"].tolist() == [3.0, 2.0]
    seq_level = clip_counts(torch.tensor([[1.5], [1.0]]), adv.abs(), mask, 0.2, 0.2)
    assert seq_level["count"].tolist() == [1.0, 1.0] and seq_level["high"].tolist() == [1.0, 0.0]


def test_algos_import_no_trl_transformers_or_accelerate():
    code = ("import sys, trl_grpo_plus.algos; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trl', 'transformers', 'accelerate')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
