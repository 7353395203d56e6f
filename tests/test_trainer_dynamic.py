"""DAPO dynamic sampling: all-equal groups are dropped and regenerated from fresh prompts, up to a cap on extra rounds;
the kept batch is put together again with consistent padding and token counts."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from grpo_testlib import EvenPromptsConstant, cpu_config, prompt_dataset

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
from trl_grpo_plus.dynamic_sampling import merge_groups, signal_groups


def _trainer(model_dir, output_dir, reward, **overrides):
    values = dict(per_device_train_batch_size=8, num_generations=4, max_steps=4, dynamic_sampling=True,
                  dynamic_sampling_max_rounds=3, beta=0.04)
    values.update(overrides)
    trainer = GRPOPlusTrainer(model=model_dir, reward_funcs=reward, args=cpu_config(GRPOPlusConfig, output_dir, **values),
                              train_dataset=prompt_dataset(16))
    batches = []
    original = trainer._plus_dynamic_sampling

    def record(inputs, batch):
        merged = original(inputs, batch)
        batches.append(merged)
        return merged

    trainer._plus_dynamic_sampling = record
    return trainer, batches


def _prompt_indices(trainer, batch):
    texts = trainer.processing_class.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
    return [int(re.search(r"Question (\d+)", t).group(1)) for t in texts]


def test_constant_groups_are_replaced_by_groups_with_signal(tiny_model_dir, tmp_path):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, EvenPromptsConstant())
    trainer.train()
    assert len(batches) == 4 and trainer.state.global_step == 4
    rounds = [log["dynamic_sampling/rounds"] for log in trainer.state.log_history if "dynamic_sampling/rounds" in log]
    assert len(rounds) == 4 and max(rounds) > 1  # some batch drew an even prompt and had to regenerate
    for batch in batches:
        assert batch["completion_ids"].shape[0] == 8 and batch["advantages"].shape == (8,)
        assert all(signal_groups(batch["advantages"], 4))  # every kept group has signal
        indices = _prompt_indices(trainer, batch)
        assert all(i % 2 == 1 for i in indices)  # no even (constant) prompt survived
        assert [indices[k] for k in range(0, 8, 4)] == [indices[k + 3] for k in range(0, 8, 4)]  # whole groups
        # token count of the kept batch, recomputed (dapo's normaliser uses it)
        assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
        for key in ("old_per_token_logps", "ref_per_token_logps"):
            if key in batch:
                assert batch[key].shape == batch["completion_ids"].shape
    fractions = [log["dynamic_sampling/signal_groups_frac"] for log in trainer.state.log_history
                 if "dynamic_sampling/signal_groups_frac" in log]
    assert fractions == [1.0] * 4


class Constant:
    __name__ = "constant"

    def __call__(self, prompts, completions, **kwargs):
        return [1.0] * len(prompts)


def test_the_cap_on_extra_rounds_is_kept_and_logged(tiny_model_dir, tmp_path, caplog):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, Constant(), max_steps=2, dynamic_sampling_max_rounds=2)
    generations = []
    original = trainer.generate_and_score
    trainer.generate_and_score = lambda rows: generations.append(len(rows)) or original(rows)
    with caplog.at_level(logging.WARNING, logger="trl_grpo_plus"):
        trainer.train()
    assert generations == [8, 8, 8] * 2  # 1 + 2 extra rounds per generation batch, then stop
    logs = [log for log in trainer.state.log_history if "dynamic_sampling/rounds" in log]
    assert [log["dynamic_sampling/rounds"] for log in logs] == [3.0, 3.0]
    assert [log["dynamic_sampling/signal_groups_frac"] for log in logs] == [0.0, 0.0]
    assert [log["dynamic_sampling/generated_groups"] for log in logs] == [6.0, 6.0]
    assert "0 of 2 groups have signal after 3 generation rounds" in caplog.text
    assert all(torch.equal(b["advantages"], torch.zeros(8, dtype=b["advantages"].dtype)) for b in batches)


def test_without_dynamic_sampling_nothing_is_regenerated(tiny_model_dir, tmp_path):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, EvenPromptsConstant(), dynamic_sampling=False, max_steps=2)
    trainer.train()
    assert batches == [] and not any("dynamic_sampling/rounds" in log for log in trainer.state.log_history)


def test_merge_groups_pads_prompts_left_and_completions_right():
    a = {"prompt_ids": torch.tensor([[5, 6], [5, 6]]), "prompt_mask": torch.ones(2, 2, dtype=torch.long),
         "completion_ids": torch.tensor([[1, 2, 3], [4, 0, 0]]), "completion_mask": torch.tensor([[1, 1, 1], [1, 0, 0]]),
         "advantages": torch.tensor([0.5, -0.5]), "num_items_in_batch": torch.tensor(4), "old_per_token_logps": None}
    b = {"prompt_ids": torch.tensor([[7, 8, 9], [7, 8, 9]]), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
         "completion_ids": torch.tensor([[1], [2]]), "completion_mask": torch.tensor([[1], [1]]),
         "advantages": torch.tensor([1.0, -1.0]), "num_items_in_batch": torch.tensor(2), "old_per_token_logps": None}
    merged = merge_groups([(b, 0), (a, 0)], group_size=2, pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[7, 8, 9], [7, 8, 9], [0, 5, 6], [0, 5, 6]]
    assert merged["prompt_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]]
    assert merged["completion_ids"].tolist() == [[1, 0, 0], [2, 0, 0], [1, 2, 3], [4, 0, 0]]
    assert merged["completion_mask"].tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert merged["advantages"].tolist() == [1.0, -1.0, 0.5, -0.5]
    assert "num_items_in_batch" not in merged and "old_per_token_logps" not in merged
    with pytest.raises(ValueError, match="cannot regroup batches with pixel_values"):
        merge_groups([(dict(a, pixel_values=torch.zeros(2, 3)), 0)], group_size=2, pad_token_id=0)
    assert signal_groups(torch.tensor([[0.0, 0.0], [0.0, 0.1], [0.0, 0.0], [0.0, 0.0]]), 2) == [True, False]


def test_dynamic_sampling_needs_a_map_style_dataset(tiny_model_dir, tmp_path):
    from datasets import IterableDataset

    iterable = IterableDataset.from_generator(lambda: ({"prompt": f"Question {i}"} for i in range(8)))
    with pytest.raises(ValueError, match="Pass a map-style datasets.Dataset"):
        GRPOPlusTrainer(model=tiny_model_dir, reward_funcs=Constant(), train_dataset=iterable,
                        args=cpu_config(GRPOPlusConfig, tmp_path, per_device_train_batch_size=8, dynamic_sampling=True))


class EvenPromptsConstantSteps:
    """Process supervision: one step of 1.0 for every completion of an even prompt (all equal, no signal); the
    varied CharStepsReward steps for odd prompts."""

    __name__ = "even_constant_steps"

    def __call__(self, prompts, completions, **kwargs):
        from grpo_testlib import CharStepsReward

        out = []
        for prompt, completion in zip(prompts, completions):
            even = int(re.search(r"Question (\d+)", prompt).group(1)) % 2 == 0
            out.append([(max(len(completion), 1), 1.0)] if even else CharStepsReward.steps(completion) or None)
        return out


def test_dynamic_sampling_with_process_supervision_keeps_per_token_advantages(tiny_model_dir, tmp_path):
    trainer, batches = _trainer(tiny_model_dir, tmp_path, EvenPromptsConstantSteps(), process_supervision=True,
                                max_steps=3, loss_type="grpo")
    trainer.train()
    assert len(batches) == 3
    for batch in batches:
        assert batch["advantages"].shape == batch["completion_ids"].shape  # [B, T], padded with the completions
        assert all(i % 2 == 1 for i in _prompt_indices(trainer, batch))
        assert all(signal_groups(batch["advantages"], 4))
        assert torch.all(batch["advantages"][batch["completion_mask"] == 0] == 0)  # nothing past a completion
    assert all(log["loss"] == log["loss"] for log in trainer.state.log_history if "loss" in log)  # no NaN
    assert max(log["dynamic_sampling/rounds"] for log in trainer.state.log_history
               if "dynamic_sampling/rounds" in log) > 1  # some batch was regenerated
