"""Run by tests/test_trainer_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Trains GRPOPlusTrainer for 4 steps (2 generation batches, μ = 2) with groups of G=4 split across the two ranks (2 completions per rank), and
writes, per rank, the gathered rewards, the local completions and advantages of each generation batch, plus a
checksum of the parameters after training. A third argument "process" trains on step rewards (process supervision); "dynamic" with dynamic sampling.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from grpo_testlib import CharStepsReward, EvenPromptsConstant, LengthReward, cpu_config, prompt_dataset  # noqa: E402

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer  # noqa: E402


def main(model_dir: str, out_dir: str, mode: str = "outcome") -> None:
    # use_cpu=True: without it accelerate does not see the torchrun processes on CPU (each rank trains alone)
    process = mode == "process"  # step rewards (process supervision) instead of one reward per completion
    dynamic = mode == "dynamic"  # dynamic sampling: one whole group per rank, all-equal groups regenerated
    args = cpu_config(GRPOPlusConfig, out_dir, per_device_train_batch_size=4 if dynamic else 2, num_generations=4,
                      max_steps=4, beta=0.04, std_estimator="population", loss_type="dapo", ddp_backend="gloo",
                      use_cpu=True, num_iterations=1 if dynamic else 2, shuffle_each_iteration=not dynamic,
                      process_supervision=process, dynamic_sampling=dynamic)
    reward = CharStepsReward() if process else EvenPromptsConstant() if dynamic else LengthReward()
    trainer = GRPOPlusTrainer(model=model_dir, reward_funcs=reward, args=args, train_dataset=prompt_dataset(16))
    records, rounds, kept = [], [], []
    if dynamic:
        generate, sample = trainer.generate_and_score, trainer._plus_dynamic_sampling

        def count_round(rows):
            rounds[-1] += 1
            return generate(rows)

        def record_kept(inputs, batch):
            merged = sample(inputs, batch)
            texts = trainer.processing_class.batch_decode(merged["prompt_ids"], skip_special_tokens=True)
            kept.append({"prompts": texts, "advantages": merged["advantages"].tolist(),
                         "tokens": merged["num_items_in_batch"].item()})
            return merged

        def start_batch():
            rounds.append(0)

        before = trainer._plus_before_generation
        trainer._plus_before_generation = lambda: (start_batch(), before())[1]
        trainer.generate_and_score, trainer._plus_dynamic_sampling = count_round, record_kept
    original = trainer._plus_after_generation

    def record(batch, rewards_per_func):
        batch = original(batch, rewards_per_func)
        ids = [[t for t, m in zip(row, mask) if m] for row, mask in zip(batch["completion_ids"].tolist(),
                                                                        batch["completion_mask"].tolist())]
        records.append({"rewards": rewards_per_func[:, 0].tolist(), "advantages": batch["advantages"].tolist(),
                        "completion_ids": ids})
        return batch

    trainer._plus_after_generation = record
    trainer.train()
    rank = trainer.accelerator.process_index
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "records": records,
        "param_checksum": [params.sum().item(), params.abs().sum().item()],
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "rounds": rounds,
        "kept": kept,
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    from trl_grpo_plus.cli import close_process_group

    try:
        main(*sys.argv[1:])
    finally:
        close_process_group()  # a live gloo group at interpreter exit can SIGABRT the rank
