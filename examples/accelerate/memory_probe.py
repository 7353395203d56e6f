"""Per-rank peak memory of GRPOPlusTrainer under whichever engine launched it, with and without reference refresh.

    python examples/accelerate/memory_probe.py                                      # one process
    accelerate launch --config_file examples/accelerate/cpu_2proc.yaml examples/accelerate/memory_probe.py   # DDP
    accelerate launch --config_file examples/accelerate/fsdp2_cpu.yaml \
        examples/accelerate/shard_on_cpu.py examples/accelerate/memory_probe.py     # FSDP2
    accelerate launch --config_file examples/accelerate/zero3_cpu.yaml examples/accelerate/memory_probe.py   # ZeRO-3

Options: the model's shape (default: the tests' tiny Qwen2, 0.1M parameters; ``--hidden 512 --layers 6 --heads 8
--kv-heads 4 --intermediate 2048`` gives 23.8M), ``--refresh N`` (ref_refresh_steps; 0 = never), ``--steps 6``.
It builds a Qwen2-shaped model with trl_grpo_plus.tiny (fp32, no hub), trains it on completions drawn from a fixed
seed (no sampling, so generation cost does not blur the numbers) and prints one JSON line per rank:
``live_tensors_mb`` (the largest, over the steps, of the tensor storage reachable from Python just before an
optimizer step: policy + reference + gradients + optimizer state, as held by this rank; activations are freed by then;
``largest_tensor_mb`` is the biggest single storage among them, e.g. a preallocated DeepSpeed bucket),
``rss_at_train_begin_mb`` and ``peak_rss_train_mb`` (the resident set at train begin, and its high-water mark during
training: Linux's VmHWM, reset at train begin), and the parameter count. RSS includes the Python / torch runtime
(~0.45 GB here), transient all-gather and activation buffers, and what the allocator keeps: compare runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile

import torch


def live_tensor_mb() -> tuple[float, float]:
    """(MB of every tensor storage reachable from Python: parameters, gradients, optimizer state, DeepSpeed's flat
    buffers, ..., each storage once, DTensors by their local shard; MB of the largest of those storages)."""
    import gc

    storages = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, torch.Tensor) or obj.is_meta:
                continue
            local = obj.to_local() if hasattr(obj, "to_local") else obj
            storage = local.untyped_storage()
            storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        except Exception:  # noqa: BLE001 - tensors without storage (functional wrappers, ...)
            continue
    return sum(storages.values()) / 2**20, max(storages.values(), default=0) / 2**20


def _vm(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
    raise KeyError(field)


class FixedTokens:
    """rollout_func: the same prompt and completion ids for a global position on any number of processes."""

    def __init__(self, vocab: int, prompt_len: int = 8, completion_len: int = 16):
        self.vocab, self.prompt_len, self.completion_len = vocab, prompt_len, completion_len

    def __call__(self, prompts, trainer):
        start = trainer.accelerator.process_index * len(prompts)
        rows = []
        for i in range(len(prompts)):
            g = torch.Generator().manual_seed(start + i)
            rows.append(torch.randint(10, self.vocab, (self.prompt_len + self.completion_len,), generator=g).tolist())
        return {"prompt_ids": [r[: self.prompt_len] for r in rows], "completion_ids": [r[self.prompt_len :] for r in rows],
                "logprobs": None}


class TokenReward:
    __name__ = "token_reward"

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        return [float(sum(ids) % 7) for ids in completion_ids]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=64)  # defaults: the tests' tiny Qwen2 (trl_grpo_plus.tiny)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=128)
    parser.add_argument("--refresh", type=int, default=0)
    parser.add_argument("--steps", type=int, default=6)
    options = parser.parse_args()

    from datasets import Dataset
    from safetensors import safe_open
    from transformers import TrainerCallback

    from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
    from trl_grpo_plus.tiny import save_tiny_model

    world = int(os.environ.get("WORLD_SIZE", "1"))
    model_dir = save_tiny_model(tempfile.mkdtemp(prefix="memory-probe-"), hidden_size=options.hidden,
                                layers=options.layers, heads=options.heads, kv_heads=options.kv_heads,
                                intermediate_size=options.intermediate)
    marks = {}

    class Marks(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks["rss_at_train_begin_mb"] = _vm("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (the peak resident set) to the current RSS

        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # parameters, gradients, optimizer state
            total, largest = live_tensor_mb()
            if total > marks.get("live_tensors_mb", 0.0):
                marks["live_tensors_mb"], marks["largest_tensor_mb"] = total, largest

        def on_train_end(self, args, state, control, **kwargs):
            marks["peak_rss_train_mb"] = _vm("VmHWM")

    args = GRPOPlusConfig(
        output_dir=tempfile.mkdtemp(prefix="memory-probe-run-"), bf16=False, report_to=[], save_strategy="no",
        gradient_checkpointing=False, logging_steps=1, disable_tqdm=True, max_completion_length=16,
        num_generations=4, per_device_train_batch_size=4 // world if world <= 4 else 1, max_steps=options.steps,
        beta=0.04, ref_refresh_steps=options.refresh or None, learning_rate=1e-4, seed=0,
        **({"ddp_backend": "gloo"} if world > 1 else {}),
        **({"use_cpu": True} if world > 1 and os.environ.get("ACCELERATE_USE_FSDP") != "true"
           and os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true" else {}),
    )
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(model_dir))
    trainer = GRPOPlusTrainer(model=model_dir, reward_funcs=TokenReward(), args=args, callbacks=[Marks()],
                              train_dataset=Dataset.from_dict({"prompt": [f"q{i}" for i in range(64)]}),
                              rollout_func=FixedTokens(vocab))
    trainer.train()
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    engine = str(trainer.accelerator.distributed_type).split(".")[-1]
    print(json.dumps({"rank": trainer.accelerator.process_index, "world": world, "engine": engine,
                      "refresh": options.refresh, "params": params, **{k: round(v, 2) for k, v in marks.items()}}),
          flush=True)


if __name__ == "__main__":
    from trl_grpo_plus.cli import close_process_group

    try:
        main()
    finally:
        close_process_group()
