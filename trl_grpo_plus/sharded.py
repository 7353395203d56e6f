"""Full values of parameters that FSDP2 or DeepSpeed ZeRO-3 shard across processes, and writing them back.

Used by the trainer to checkpoint the reference model (or the PEFT "ref" adapter) and to check a refresh:

- FSDP2 (``fully_shard``): a parameter is a ``DTensor`` holding a dim-0 shard; ``full_tensor()`` all-gathers it.
- ZeRO-3: a parameter's ``data`` is empty outside ``deepspeed.zero.GatheredParameters``.
- anything else (one process, DDP, ZeRO-1/2, whose reference is a full replica): the tensor itself.

Every function that gathers is a collective: call it on every rank, in the same order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def _is_zero3(tensor: torch.Tensor) -> bool:
    return hasattr(tensor, "ds_id")


@contextlib.contextmanager
def _gathered(tensors: list[torch.Tensor], modify: bool) -> Iterator[None]:
    """Inside, ZeRO-3 parameters hold their full value; with ``modify``, rank 0's writes are kept on exit."""
    partitioned = list({id(t): t for t in tensors if _is_zero3(t)}.values())
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if modify else None):
        yield


@contextlib.contextmanager
def writable(tensors: Iterable[torch.Tensor]) -> Iterator[None]:
    """Inside, in-place writes to ``tensors`` last: ZeRO-3 parameters are gathered and rank 0's values are written
    back to every partition on exit (a write to a bare ZeRO-3 parameter is lost at its next gather, even for one
    small enough to stay resident); DTensors and plain tensors are written as they are (a DTensor: its local shard)."""
    with _gathered(list(tensors), modify=True):
        yield


def full_values(named: Iterable[tuple[str, torch.Tensor]], keep: bool = True) -> dict[str, torch.Tensor]:
    """``{name: full value on CPU}`` of parameters / buffers, gathering the sharded ones (a collective).

    One tensor is gathered at a time, so the transient on the device is one full tensor, not the whole model.
    ``keep=False`` (the ranks that do not write the file) takes part in the gathers and returns ``{}``.
    """
    values = {}
    with torch.no_grad():
        for name, t in named:
            with _gathered([t], modify=False):
                full = (t.full_tensor() if isinstance(t, DTensor) else t).detach()
                if keep:
                    values[name] = full.to("cpu", copy=True)
    return values


def load_full_values(targets: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    """Write full ``values`` into the (possibly sharded) ``targets`` of the same names; every rank passes all values.

    A DTensor keeps only its own shard (sliced locally, no communication); ZeRO-3 writes go through rank 0, one
    tensor at a time.
    """
    unknown = sorted(set(values) - set(targets))
    if unknown:
        raise KeyError(f"saved reference tensors {unknown[:5]} have no counterpart in the model; the checkpoint was "
                       "written for a different model or adapter configuration.")
    with torch.no_grad():
        for name, value in values.items():
            target = targets[name]
            with _gathered([target], modify=True):
                value = value.to(device=target.device, dtype=target.dtype)
                if isinstance(target, DTensor):
                    value = distribute_tensor(value, target.device_mesh, target.placements, src_data_rank=None)
                target.copy_(value)


def layout_mismatch(source: torch.nn.Module, target: torch.nn.Module) -> str | None:
    """Why a shard-by-shard copy of ``source``'s parameters into ``target``'s would be wrong, or None if it is right.

    TRL's ``SyncRefModelCallback.sync_target_model`` copies ``param.data`` pairwise, which for DTensors copies local
    shards: correct exactly when each pair has the same shape, mesh and placements (as when TRL's ``prepare_fsdp``
    shards the reference like the policy). Plain tensors and ZeRO-3 partitions (gathered by that function) pass.
    """
    ours, theirs = list(source.named_parameters()), list(target.named_parameters())
    if len(ours) != len(theirs):
        return f"the policy has {len(ours)} parameters and the reference {len(theirs)}"
    for (name, a), (_, b) in zip(ours, theirs):
        if not isinstance(a, DTensor) and not isinstance(b, DTensor):
            continue  # full tensors, or ZeRO-3 partitions (which sync_target_model gathers first)
        if (not isinstance(a, DTensor) or not isinstance(b, DTensor) or a.shape != b.shape
                or a.device_mesh != b.device_mesh or a.placements != b.placements):
            return f"parameter {name!r} is {_describe(a)} in the policy but {_describe(b)} in the reference"
    return None


def _describe(t: torch.Tensor) -> str:
    if isinstance(t, DTensor):
        return f"a DTensor {tuple(t.shape)} with placements {t.placements} on {t.device_mesh}"
    return f"a tensor {tuple(t.shape)}"
