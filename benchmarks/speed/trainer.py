"""Speed and memory: ``GRPOPlusTrainer`` against ``trl.GRPOTrainer`` at TRL-equivalent settings.

    python -m trl_grpo_plus.benchmarks.speed.trainer [--rounds 6] [--steps 40] [--model DIR] [--json FILE]

Both trainers run the same job: the tiny offline Qwen2 (or ``--model``), G = 4, 8 completions per step, 16 new
tokens, β = 0.04 (reference model + KL), μ = 2 (old log-probs), loss_type 'dapo', sample std, ε = 1e-4, k3 —
settings where the two compute the same loss (tests/test_trainer_trl_equivalence.py). Each run is a fresh
subprocess, so that its peak RSS (``ru_maxrss``) is its own; runs alternate ours/TRL and TRL/ours round by round so
that drift in machine load hits both alike. The first ``--warmup`` steps of every run are dropped.

Prints the mean step time of each and the median over rounds of the per-round ratio ours / TRL (target ≤ 1.02×;
pairing by round cancels slow drift in machine load), the same for process CPU time per step (less sensitive to
other load on a shared machine), and the median peak RSS of each with their ratio (target ≤ 1.0×). Children inherit OMP_NUM_THREADS, set to 1 when unset (on small CPU machines torch's thread pool
makes a tiny model's matmuls far slower, which would only add noise).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

KINDS = ("plus", "trl")


def _child(kind: str, model_dir: str, steps: int, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    if kind == "plus":
        from trl_grpo_plus import GRPOPlusConfig as Config
        from trl_grpo_plus import GRPOPlusTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu_times, self._start, self._cpu_start = [], [], None, None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start, self._cpu_start = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._start)
            self.cpu_times.append(time.process_time() - self._cpu_start)

    def reward(prompts, completions, **kwargs):
        return [float(len(c) % 5) for c in completions]

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as out:
        args = Config(output_dir=out, bf16=False, report_to=[], save_strategy="no", logging_steps=10**9,
                      disable_tqdm=True, gradient_checkpointing=False, per_device_train_batch_size=8,
                      num_generations=4, max_completion_length=16, max_steps=steps, seed=seed, beta=0.04,
                      num_iterations=2, loss_type="dapo", learning_rate=1e-5)
        dataset = Dataset.from_dict({"prompt": [f"Question {i}: what is {i} + {i}?" for i in range(4 * steps)]})
        timer = StepTimer()
        trainer = Trainer(model=model_dir, reward_funcs=reward, args=args, train_dataset=dataset, callbacks=[timer])
        trainer.train()
    return {"kind": kind, "step_times": timer.times, "step_cpu_times": timer.cpu_times, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "rss_before_train_mb": rss_before / 1024, "torch_threads": torch.get_num_threads()}


def _run_child(kind: str, model_dir: str, steps: int, seed: int) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = [sys.executable, "-m", "trl_grpo_plus.benchmarks.speed.trainer", "--child", kind, "--model", model_dir,
               "--steps", str(steps), "--seed", str(seed)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="runs of each trainer (alternating order)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=4, help="first steps of each run left out of the timing")
    parser.add_argument("--model", default=None, help="model folder (default: the tiny offline Qwen2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_child(args.child, args.model, args.steps, args.seed)))
        return 0

    model_dir = args.model
    if model_dir is None:
        from trl_grpo_plus.tiny import save_tiny_model

        model_dir = save_tiny_model(tempfile.mkdtemp(prefix="tiny-grpo-"))
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for round_index in range(args.rounds):
        order = KINDS if round_index % 2 == 0 else KINDS[::-1]
        for kind in order:
            result = _run_child(kind, model_dir, args.steps, args.seed)
            runs[kind].append(result)
            times = result["step_times"][args.warmup :]
            cpu = result["step_cpu_times"][args.warmup :]
            print(f"round {round_index + 1}/{args.rounds} {kind:>4}: mean step {statistics.fmean(times) * 1e3:7.2f} ms "
                  f"wall, {statistics.fmean(cpu) * 1e3:7.2f} ms CPU   peak RSS {result['peak_rss_mb']:7.1f} MB",
                  flush=True)

    def pooled(kind, key="step_times"):
        return [t for run in runs[kind] for t in run[key][args.warmup :]]

    def paired_ratio(key):
        """Median over rounds of (our mean step / TRL's mean step) in the same round: load drift cancels."""
        return statistics.median(statistics.fmean(p[key][args.warmup :]) / statistics.fmean(t[key][args.warmup :])
                                 for p, t in zip(runs["plus"], runs["trl"]))

    summary = {
        kind: {
            "median_step_s": statistics.median(pooled(kind)),
            "mean_step_s": statistics.fmean(pooled(kind)),
            "mean_step_cpu_s": statistics.fmean(pooled(kind, "step_cpu_times")),
            "median_peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in runs[kind]),
            "runs": len(runs[kind]),
        }
        for kind in KINDS
    }
    summary["step_time_ratio"] = paired_ratio("step_times")
    summary["step_cpu_time_ratio"] = paired_ratio("step_cpu_times")
    summary["pooled_median_step_time_ratio"] = summary["plus"]["median_step_s"] / summary["trl"]["median_step_s"]
    summary["peak_rss_ratio"] = summary["plus"]["median_peak_rss_mb"] / summary["trl"]["median_peak_rss_mb"]
    summary["settings"] = {"rounds": args.rounds, "steps": args.steps, "warmup": args.warmup, "model": model_dir,
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1 (set for the children)")}
    plus, trl = summary["plus"], summary["trl"]
    print()
    print(f"step time (wall)  GRPOPlusTrainer {plus['mean_step_s'] * 1e3:.2f} ms   trl.GRPOTrainer "
          f"{trl['mean_step_s'] * 1e3:.2f} ms (means)   median per-round ratio {summary['step_time_ratio']:.3f}x  "
          "(target <= 1.02x)")
    print(f"step time (CPU)   GRPOPlusTrainer {plus['mean_step_cpu_s'] * 1e3:.2f} ms   trl.GRPOTrainer "
          f"{trl['mean_step_cpu_s'] * 1e3:.2f} ms (means)   median per-round ratio {summary['step_cpu_time_ratio']:.3f}x")
    print(f"peak RSS          GRPOPlusTrainer {plus['median_peak_rss_mb']:.1f} MB   trl.GRPOTrainer "
          f"{trl['median_peak_rss_mb']:.1f} MB (medians)   ratio {summary['peak_rss_ratio']:.3f}x  (target <= 1.0x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
