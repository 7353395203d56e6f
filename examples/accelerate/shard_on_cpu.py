"""Run a script under accelerate's FSDP on a machine without a GPU, so that the model really is sharded.

Usage (two processes, gloo, CPU only; the config is the CPU variant of fsdp.yaml)::

    accelerate launch --config_file examples/accelerate/fsdp2_cpu.yaml \
        examples/accelerate/shard_on_cpu.py your_script.py [its arguments]
    accelerate launch --config_file examples/accelerate/fsdp2_cpu.yaml \
        examples/accelerate/shard_on_cpu.py -m trl_grpo_plus train --config cfg.yaml

Why a shim: accelerate 1.15 only turns on its FSDP plugin when the process group it forms is a multi-device one
(``MULTI_GPU`` and its siblings). On a machine without a GPU the group is ``MULTI_CPU`` with ``use_cpu: true``, and
an FSDP config then silently trains as plain data parallel (``accelerator.distributed_type`` is not ``FSDP``,
``trainer.is_fsdp_enabled`` is False, no parameter is a DTensor); without ``use_cpu`` it is ``NO``: each launched
process counts as a lone one, and GRPO fails on a group split across ranks.
torch's FSDP2 (``fully_shard``) itself runs on CPU with gloo. This shim makes accelerate classify a launched,
GPU-less process as ``MULTI_GPU`` over gloo, with its device pinned to the CPU (``ACCELERATE_TORCH_DEVICE=cpu``), so
the rest is accelerate's and TRL's unchanged FSDP path. Scripts must pass ``ddp_backend="gloo"`` and must not set
``use_cpu=True`` (that re-selects ``MULTI_CPU``).

It changes nothing when a GPU is visible, when the launch is not an FSDP one (``ACCELERATE_USE_FSDP`` unset), or
when the script runs without a launcher. It is for checking the FSDP path on CPU (tests, CI); on GPUs use
``accelerate launch --config_file examples/accelerate/fsdp.yaml your_script.py`` directly. DeepSpeed needs no shim:
its CPU accelerator (gloo) is picked by accelerate's DeepSpeed path as it is (see zero2_cpu.yaml / zero3_cpu.yaml).

It patches one private method of accelerate (``PartialState._prepare_backend``), tested with accelerate 1.15.
"""

from __future__ import annotations

import os
import runpy
import sys


def install() -> bool:
    """Make accelerate form a sharding-capable (MULTI_GPU over gloo, CPU device) state. Returns True if installed."""
    import torch

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or torch.cuda.is_available():
        return False
    if int(os.environ.get("LOCAL_RANK", -1)) == -1:
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")  # PartialState.device, before set_device runs
    original = PartialState._prepare_backend

    def prepare_backend(self, cpu: bool = False, sagemaker_dp: bool = False, backend: str | None = None):
        backend, distributed_type = original(self, cpu, sagemaker_dp, backend)
        if distributed_type == DistributedType.NO and not cpu:
            if backend not in (None, "gloo"):
                raise ValueError(f"shard_on_cpu: ddp_backend={backend!r} cannot run on CPU; pass ddp_backend='gloo'.")
            return "gloo", DistributedType.MULTI_GPU
        if distributed_type == DistributedType.MULTI_CPU:
            raise ValueError("shard_on_cpu: use_cpu=True selects accelerate's MULTI_CPU mode, which never shards; "
                             "drop use_cpu (and pass ddp_backend='gloo').")
        return backend, distributed_type

    PartialState._prepare_backend = prepare_backend
    return True


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit("shard_on_cpu: -m needs a module name")
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
