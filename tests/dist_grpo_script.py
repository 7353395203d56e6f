"""Run by tests/test_trainer_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Trains GRPOPlusTrainer for 4 steps (2 generation batches, μ = 2) with groups of G=4 split across the two ranks (2 completions per rank), and
writes, per rank, the gathered rewards, the local completions and advantages of each generation batch, plus a
checksum of the parameters after training. A third argument "process" trains on step rewards (process supervision).
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from grpo_testlib import CharStepsReward, LengthReward, cpu_config, prompt_dataset  # noqa: E402

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer  # noqa: E402


def main(model_dir: str, out_dir: str, mode: str = "outcome") -> None:
    # use_cpu=True: without it accelerate does not see the torchrun processes on CPU (each rank trains alone)
    process = mode == "process"  # step rewards (process supervision) instead of one reward per completion
    args = cpu_config(GRPOPlusConfig, out_dir, per_device_train_batch_size=2, num_generations=4, max_steps=4,
                      beta=0.04, std_estimator="population", loss_type="dapo", ddp_backend="gloo", use_cpu=True,
                      num_iterations=2, shuffle_each_iteration=True, process_supervision=process)
    reward = CharStepsReward() if process else LengthReward()
    trainer = GRPOPlusTrainer(model=model_dir, reward_funcs=reward, args=args, train_dataset=prompt_dataset(16))
    records = []
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
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    from trl_grpo_plus.cli import close_process_group

    try:
        main(*sys.argv[1:])
    finally:
        close_process_group()  # a live gloo group at interpreter exit can SIGABRT the rank
