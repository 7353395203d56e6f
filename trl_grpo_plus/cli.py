"""Console script ``trl-grpo-plus`` with subcommands ``train``, ``eval`` and ``demo``.

Each subcommand lives in its own module and receives the remaining arguments, so importing the CLI
costs nothing and ``trl-grpo-plus eval --help`` does not import TRL.
"""

from __future__ import annotations

import gc
import importlib
import sys

SUBCOMMANDS = {
    "train": ("trl_grpo_plus.train", "GRPO training from a YAML config plus CLI overrides (TRL style)"),
    "eval": ("trl_grpo_plus.benchmarks.cli", "DeepSeekMath-style GSM8K / MATH evaluation"),
    "demo": ("trl_grpo_plus.demo", "offline CPU demo: GRPO on synthetic arithmetic with a shipped tiny model"),
}


def _usage() -> str:
    lines = ["usage: trl-grpo-plus {train,eval,demo} [args...]", "", "subcommands:"]
    lines += [f"  {name:<6} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `trl-grpo-plus <subcommand> --help` for the options of each."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from ._version import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"trl-grpo-plus: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}.\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    finally:
        close_process_group()


def close_process_group() -> None:
    """Free what still uses the default torch.distributed process group, then destroy it.

    A gloo process group that is still alive at interpreter shutdown can abort the process
    ("terminate called without an active exception", SIGABRT) while its worker threads are torn
    down, turning a finished run into a failed launch. ``destroy_process_group()`` alone is not
    enough: a finished trainer sits in reference cycles, and its DistributedDataParallel wrapper
    keeps the C++ process group alive until the interpreter's last collection, which is exactly the
    unsafe moment. ``gc.collect()`` frees those objects first, while the interpreter is whole. Each
    collective of a subcommand has completed by the time it returns, so this is local and cannot hang.
    """
    torch = sys.modules.get("torch")  # never import torch just to find out nothing is running
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    gc.collect()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
