"""Run by tests/test_fsdp.py and tests/test_deepspeed.py under two launched processes (gloo, CPU).

    accelerate launch --config_file examples/accelerate/fsdp2_cpu.yaml examples/accelerate/shard_on_cpu.py \
        tests/sharded_grpo_script.py MODEL_DIR OUT_DIR fixed,peft
    accelerate launch --config_file examples/accelerate/zero3_cpu.yaml tests/sharded_grpo_script.py MODEL_DIR OUT_DIR fixed

``fixed``: 5 steps of GRPOPlusTrainer on a fixed rollout indexed by the *global* position of a completion (so a
one-process run on the same global batch sees the same completions), one group of G=4 split 2 + 2 over the ranks,
a reference refresh every 2 generation batches (before steps 3 and 5) and a checkpoint at step 3; then a second
trainer resumes from that checkpoint. ``peft``: LoRA + refresh (before step 3) with real sampled generation, 4 steps,
resumed from checkpoint-3 the same way.

Each rank writes ``{mode}-rank{r}.json`` per mode: how the model is sharded, per refresh whether the gathered reference equals the
gathered policy and the collectives issued by the refresh, the per-step loss / grad norm / KL, the resumed losses,
and its peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from grpo_testlib import COMPLETION_IDS, PROMPT_IDS, LengthReward, cpu_config, prompt_dataset  # noqa: E402

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer  # noqa: E402

GROUP = 4
STEPS, REFRESH_EVERY, SAVE_AT, PEFT_STEPS = 5, 2, 3, 4


class GlobalFixedRollout:
    """Completions from grpo_testlib's table by global position (rank offset + local index) and generation batch."""

    def __call__(self, prompts, trainer):
        start = trainer.accelerator.process_index * len(prompts)
        shift = GROUP * ((trainer._plus_generation_batches - 1) % (len(COMPLETION_IDS) // GROUP))
        rows = [(shift + start + i) % len(COMPLETION_IDS) for i in range(len(prompts))]
        return {"prompt_ids": [list(PROMPT_IDS[(r // GROUP) % len(PROMPT_IDS)]) for r in rows],
                "completion_ids": [list(COMPLETION_IDS[r]) for r in rows], "logprobs": None}


def config(out_dir, processes: int, **overrides):
    """The run's config; ``processes`` = 1 gives the one-process run on the same global batch."""
    values = dict(per_device_train_batch_size=GROUP // processes, num_generations=GROUP, max_steps=STEPS, beta=0.5,
                  ref_refresh_steps=REFRESH_EVERY, learning_rate=3e-2, save_strategy="steps", save_steps=SAVE_AT,
                  save_only_model=False)
    if processes > 1:
        values["ddp_backend"] = "gloo"
    values.update(overrides)
    return cpu_config(GRPOPlusConfig, out_dir, **values)


def fixed_trainer(model_dir, out_dir, processes):
    return GRPOPlusTrainer(model=model_dir, reward_funcs=LengthReward(), args=config(out_dir, processes),
                           train_dataset=prompt_dataset(16), rollout_func=GlobalFixedRollout())


def step_logs(trainer) -> dict[str, dict[int, float]]:
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return {key: {log["step"]: log[key] for log in logs if key in log} for key in ("loss", "grad_norm", "kl")}


# ---- engine-independent views of sharded parameters -----------------------------------------------------------------
def zero3_enabled() -> bool:
    from accelerate.state import AcceleratorState

    plugin = AcceleratorState().deepspeed_plugin
    return plugin is not None and plugin.zero_stage == 3


def full_parameters(module) -> dict[str, torch.Tensor]:
    """Every parameter gathered to its full value (a collective under FSDP2 / ZeRO-3: call it on every rank)."""
    from torch.distributed.tensor import DTensor

    params = dict(module.named_parameters())
    if zero3_enabled():
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values())):
            return {name: p.detach().clone() for name, p in params.items()}
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for name, p in params.items()}


def layout(module) -> dict:
    """How the parameters are held on this rank: DTensor (FSDP2), ZeRO-3 partitions, or full replicas."""
    from torch.distributed.tensor import DTensor

    params = list(module.parameters())
    full = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in params)
    if all(isinstance(p, DTensor) for p in params):
        local = sum(p.to_local().numel() for p in params)
    elif all(hasattr(p, "ds_tensor") for p in params):
        local = sum(p.ds_tensor.numel() for p in params)
    else:
        local = sum(p.numel() for p in params)
    return {"all_dtensor": all(isinstance(p, DTensor) for p in params),
            "any_dtensor": any(isinstance(p, DTensor) for p in params),
            "all_zero3_partitioned": all(hasattr(p, "ds_tensor") and p.numel() == 0 for p in params),
            "local_numel": local, "full_numel": full}


def optimizer_numel(trainer) -> int:
    """Elements of fp32 master weights / parameters the optimizer holds on this rank (ZeRO-1/2/3 partitions)."""
    from torch.distributed.tensor import DTensor

    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    for partitions in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):  # ZeRO-1/2, ZeRO-3
        if hasattr(inner, partitions):
            return sum(t.numel() for t in getattr(inner, partitions))
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for g in inner.param_groups for p in g["params"])


def engine_info(trainer) -> dict:
    from accelerate.state import AcceleratorState

    state = AcceleratorState()
    ref = trainer.accelerator.unwrap_model(trainer.ref_model) if trainer.ref_model is not None else None
    return {"distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
            "is_fsdp_enabled": bool(trainer.is_fsdp_enabled), "is_fsdp2": bool(trainer.accelerator.is_fsdp2),
            "is_deepspeed_enabled": bool(trainer.is_deepspeed_enabled),
            "zero_stage": state.deepspeed_plugin.zero_stage if state.deepspeed_plugin is not None else None,
            "world_size": trainer.accelerator.num_processes, "optimizer_numel": optimizer_numel(trainer),
            "policy": layout(trainer.accelerator.unwrap_model(trainer.model)),
            "reference": layout(ref) if ref is not None else None}


def watch_refreshes(trainer) -> list[dict]:
    """Wrap trainer.refresh_reference: count its collectives, then compare the gathered reference with the policy."""
    from torch.distributed.tensor.debug import CommDebugMode

    records, original = [], trainer.refresh_reference
    gathers = []  # ZeRO-3: (number of parameters) per deepspeed.zero.GatheredParameters context opened
    if zero3_enabled():
        import deepspeed

        class CountedGather(deepspeed.zero.GatheredParameters):
            def __init__(self, params, *args, **kwargs):
                params = list(params) if not isinstance(params, torch.nn.Parameter) else [params]
                gathers.append(len(params))
                super().__init__(params, *args, **kwargs)

    def refresh():
        gathers.clear()
        with CommDebugMode() as comm:
            if zero3_enabled():
                deepspeed.zero.GatheredParameters, plain = CountedGather, deepspeed.zero.GatheredParameters
                try:
                    original()
                finally:
                    deepspeed.zero.GatheredParameters = plain
            else:
                original()
        counts = {str(op).split(".")[-1]: n for op, n in comm.get_comm_counts().items()}
        policy = full_parameters(trainer.accelerator.unwrap_model(trainer.model))
        if trainer.ref_model is not None:
            reference = full_parameters(trainer.accelerator.unwrap_model(trainer.ref_model))
            pairs = [(reference[name], policy[name]) for name in policy]
        else:  # PEFT: the "ref" adapter must equal the trained adapter
            pairs = [(policy[name.replace(".default.", ".ref.")], p) for name, p in policy.items() if ".default." in name]
        records.append({"before_generation_batch": trainer._plus_generation_batches,
                        "reference_equals_policy": bool(pairs) and all(torch.equal(a, b) for a, b in pairs),
                        "compared": len(pairs), "collectives": counts, "zero3_gathers": list(gathers)})

    trainer.refresh_reference = refresh
    return records


def layout_checks() -> dict:
    """trl_grpo_plus.sharded.layout_mismatch on FSDP2 modules sharded alike, and on one replicated instead."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Replicate, distribute_tensor

    from trl_grpo_plus.sharded import layout_mismatch

    torch.manual_seed(0)
    policy, alike, replicated = (torch.nn.Linear(4, 6) for _ in range(3))
    fully_shard(policy)
    fully_shard(alike)
    mesh = policy.weight.device_mesh
    for name in ("weight", "bias"):
        full = getattr(replicated, name).detach()
        setattr(replicated, name, torch.nn.Parameter(distribute_tensor(full, mesh, [Replicate()])))
    return {"alike": layout_mismatch(policy, alike), "replicated": layout_mismatch(policy, replicated),
            "plain": layout_mismatch(policy, torch.nn.Linear(4, 6))}


def run_fixed(model_dir, out_dir, processes) -> dict:
    trainer = fixed_trainer(model_dir, os.path.join(out_dir, "run"), processes)
    refreshes = watch_refreshes(trainer)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.train()
    result = {"engine": engine_info(trainer), "refreshes": refreshes, "logs": step_logs(trainer),
              "peak_rss_kb_before_train": rss_before,
              "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    checkpoint = os.path.join(out_dir, "run", f"checkpoint-{SAVE_AT}")
    resumed = fixed_trainer(model_dir, os.path.join(out_dir, "resumed"), processes)
    resumed.train(resume_from_checkpoint=checkpoint)
    result["resumed_logs"] = step_logs(resumed)
    if resumed.accelerator.is_fsdp2:
        result["layout_checks"] = layout_checks()
    return result


def peft_trainer(model_dir, out_dir, processes):
    from peft import LoraConfig

    args = config(out_dir, processes, max_steps=PEFT_STEPS, learning_rate=1e-1)
    return GRPOPlusTrainer(model=model_dir, reward_funcs=LengthReward(), args=args, train_dataset=prompt_dataset(16),
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))


def run_peft(model_dir, out_dir, processes) -> dict:
    """LoRA, real sampled generation; refresh before step 3, checkpoint after it, resume for step 4."""
    trainer = peft_trainer(model_dir, os.path.join(out_dir, "peft"), processes)
    refreshes = watch_refreshes(trainer)
    trainer.train()
    result = {"engine": engine_info(trainer), "refreshes": refreshes, "logs": step_logs(trainer)}
    resumed = peft_trainer(model_dir, os.path.join(out_dir, "peft-resumed"), processes)
    resumed.train(resume_from_checkpoint=os.path.join(out_dir, "peft", f"checkpoint-{SAVE_AT}"))
    result["resumed_logs"] = step_logs(resumed)
    return result


def main(model_dir: str, out_dir: str, mode: str) -> None:
    processes, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    for name in mode.split(","):
        result = {"fixed": run_fixed, "peft": run_peft}[name](model_dir, out_dir, processes)
        with open(os.path.join(out_dir, f"{name}-rank{rank}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    from trl_grpo_plus.cli import close_process_group

    try:
        main(*sys.argv[1:4])
    finally:
        close_process_group()  # a live gloo group at interpreter exit can SIGABRT the rank
