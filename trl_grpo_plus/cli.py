"""Console script ``trl-grpo-plus`` with subcommands ``train``, ``eval`` and ``demo``.

Each subcommand lives in its own module and receives the remaining arguments, so importing the CLI
costs nothing and ``trl-grpo-plus eval --help`` does not import TRL.
"""

from __future__ import annotations

import gc
import importlib
import sys
import types

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
    """Destroy the default torch.distributed process group, and drop what would keep it alive.

    A gloo process group that is still alive at interpreter shutdown can abort the process
    ("terminate called without an active exception", SIGABRT) while its worker threads are torn
    down, turning a finished run into a failed launch. ``destroy_process_group()`` alone does not
    end it when other objects still hold the group:

    - a finished trainer sits in reference cycles, and its DistributedDataParallel wrapper holds
      the group until the interpreter's last collection: ``gc.collect()`` frees it first;
    - ``torch.distributed.nn.functional`` evaluates ``group=group.WORLD`` as a default argument
      when it is imported, and loading a transformers model imports it after the group exists, so
      ten of its functions keep the group alive: their default goes back to None (the default
      group, whatever it is at call time).

    The group's C++ worker threads are then joined here, while the interpreter is whole. Each
    collective of a subcommand has completed by the time it returns, so this is local and cannot hang.
    """
    torch = sys.modules.get("torch")  # never import torch just to find out nothing is running
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    gc.collect()
    group = torch.distributed.group.WORLD
    torch.distributed.destroy_process_group()
    _drop_default_argument(sys.modules.get("torch.distributed.nn.functional"), group)


def _drop_default_argument(module, group) -> None:
    """Replace ``group`` by None in the default arguments of ``module``'s functions."""
    if module is None:
        return
    for function in vars(module).values():
        defaults = getattr(function, "__defaults__", None)
        if isinstance(function, types.FunctionType) and defaults and any(d is group for d in defaults):
            function.__defaults__ = tuple(None if d is group else d for d in defaults)


if __name__ == "__main__":
    sys.exit(main())
