"""Reference refresh (π_ref ← π_θ every N generation batches), its checkpointing, and its PEFT meaning."""

from __future__ import annotations

import shutil

import pytest
import torch
from grpo_testlib import LengthReward, cpu_config, prompt_dataset

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
from trl_grpo_plus.trainer import REFERENCE_FILE, STATE_FILE


def _params(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _trainer(model_dir, output_dir, **overrides):
    values = dict(beta=0.5, ref_refresh_steps=2, max_steps=3)
    values.update(overrides)
    args = cpu_config(GRPOPlusConfig, output_dir, **values)
    return GRPOPlusTrainer(model=model_dir, reward_funcs=LengthReward(), args=args, train_dataset=prompt_dataset(16))


def test_refresh_copies_the_policy_and_the_next_batch_uses_fresh_reference_logps(tiny_model_dir, tmp_path):
    # μ = 1 and one micro-step per optimizer step: generation batch k feeds step k+1; refresh before batch 2
    trainer = _trainer(tiny_model_dir, tmp_path)
    initial = _params(trainer.ref_model)
    seen = []
    original = trainer._plus_after_generation

    def after_generation(batch, rewards_per_func):
        batch = original(batch, rewards_per_func)
        with torch.no_grad():
            fresh_ref, _, _ = trainer.per_token_logps(trainer.ref_model, batch)
            policy_now, _, _ = trainer.per_token_logps(trainer.model, batch)
        seen.append(dict(
            ref_is_initial=_same(_params(trainer.ref_model), initial),
            ref_is_policy=_same(_params(trainer.ref_model), _params(trainer.model)),
            buffered_ref_is_fresh=torch.equal(batch["ref_per_token_logps"], fresh_ref),
            buffered_ref_is_policy=torch.equal(batch["ref_per_token_logps"], policy_now),
        ))
        return batch

    trainer._plus_after_generation = after_generation
    trainer.train()
    assert [s["ref_is_initial"] for s in seen] == [True, True, False]
    assert [s["ref_is_policy"] for s in seen] == [True, False, True]  # batch 0: nothing trained yet
    assert all(s["buffered_ref_is_fresh"] for s in seen)
    assert seen[2]["buffered_ref_is_policy"]  # recomputed after the refresh, not stale
    kl = [log["kl"] for log in trainer.state.log_history if "kl" in log]
    assert kl[0] == 0.0 and kl[1] > 0.0 and kl[2] == 0.0  # π_θ = π_ref at the first step after a refresh
    assert trainer._plus_refreshes == 1


def _losses(trainer, **train_kwargs):
    trainer.train(**train_kwargs)
    return {log["step"]: log["loss"] for log in trainer.state.log_history if "loss" in log}


def test_resume_after_a_refresh_continues_with_the_refreshed_reference(tiny_model_dir, tmp_path):
    # refresh before generation batch 2 (step 3); checkpoint at step 3; steps 4 and 5 use the refreshed π_ref
    # (batch 3), then a new refresh (batch 4)
    settings = dict(max_steps=5, save_strategy="steps", save_steps=3)
    uninterrupted = _losses(_trainer(tiny_model_dir, tmp_path / "a", **settings))
    checkpoint = tmp_path / "a" / "checkpoint-3"
    assert (checkpoint / STATE_FILE).is_file() and (checkpoint / REFERENCE_FILE).is_file()

    resumed = _losses(_trainer(tiny_model_dir, tmp_path / "b", **settings), resume_from_checkpoint=str(checkpoint))
    assert sorted(resumed) == [1, 2, 3, 4, 5]  # steps 1-3 come from the checkpoint's trainer state
    for step in (4, 5):
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-6, abs=1e-9), step

    # control: without the saved reference the run would use the initial model as π_ref, and step 4 differs
    stale = tmp_path / "stale-checkpoint"
    shutil.copytree(checkpoint, stale)
    (stale / REFERENCE_FILE).unlink()
    wrong = _losses(_trainer(tiny_model_dir, tmp_path / "c", **settings), resume_from_checkpoint=str(stale))
    assert wrong[4] != pytest.approx(uninterrupted[4], rel=1e-4)


def test_peft_reference_is_a_frozen_adapter_copy_refreshed_from_the_trained_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    args = cpu_config(GRPOPlusConfig, tmp_path, beta=0.5, ref_refresh_steps=1, max_steps=2)
    trainer = GRPOPlusTrainer(model=tiny_model_dir, reward_funcs=LengthReward(), args=args,
                              train_dataset=prompt_dataset(16),
                              peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    model = trainer.model

    def adapter(name):
        return {k.replace(f".{name}.", "."): v for k, v in _params(model).items() if f".{name}." in k}

    assert "ref" in model.peft_config and _same(adapter("ref"), adapter("default"))  # π_ref = π_θ₀
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".ref." in n)
    snapshots = []
    original = trainer.refresh_reference

    def refresh():
        trained, old_ref = adapter("default"), adapter("ref")
        original()
        snapshots.append((trained, old_ref, adapter("ref"), adapter("default")))

    trainer.refresh_reference = refresh
    trainer.train()
    assert len(snapshots) == 1
    trained, old_ref, new_ref, policy_after = snapshots[0]
    assert not _same(trained, old_ref)  # step 1 moved the adapter away from π_θ₀
    assert _same(new_ref, trained)  # the copy goes trained adapter → "ref" ...
    assert _same(policy_after, trained)  # ... and leaves the trained adapter as it was (no reset to π_θ₀)
    assert not _same(adapter("ref"), adapter("default"))  # step 2 trained the adapter further
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized for n, p in model.named_parameters() if ".ref." in n)
    kl = [log["kl"] for log in trainer.state.log_history if "kl" in log]
    assert kl == [0.0, 0.0]  # base+LoRA(B=0) = π_θ₀ at step 1; refreshed copy at step 2
