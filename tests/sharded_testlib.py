"""Shared by test_fsdp.py and test_deepspeed.py: launch tests/sharded_grpo_script.py on two CPU processes through
``accelerate launch`` with a config from examples/accelerate/, and the checks every sharding engine must pass.

Tolerance against the one-process run on the same global batch: ``rel=5e-5`` (``abs=1e-7`` for values near 0).
Both runs are float32 (ε ≈ 1.2e-7) and add the same terms in a different order: each rank sums its half of the
batch, then gloo reduces the halves (FSDP2 reduce-scatters gradients, DeepSpeed all-reduces or reduce-scatters them).
Over the 5 steps (lr 3e-2) the measured gaps were at most 1.3e-5 relative on losses and 5e-6 on grad norms, so the
bound leaves about 4x margin, while the mistakes it must catch move these values by far more: advantages
normalised per rank instead of per group, a token normaliser off by the number of processes (2x), or gradients
not reduced across ranks (grad norm off by tens of percent).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "examples" / "accelerate"
SCRIPT = HERE / "sharded_grpo_script.py"
REL, ABS = 5e-5, 1e-7


def launch(config: str, model_dir: str, out_dir: pathlib.Path, modes: str, *, shim: bool, timeout: int = 600) -> dict:
    """Run the script on 2 processes with ``examples/accelerate/<config>``; returns {mode: [rank0, rank1]}."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(EXAMPLES / config)]
    command += [str(EXAMPLES / "shard_on_cpu.py")] if shim else []
    command += [str(SCRIPT), model_dir, str(out_dir), modes]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(out_dir))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-8000:]
    return {mode: [json.loads((out_dir / f"{mode}-rank{r}.json").read_text()) for r in (0, 1)]
            for mode in modes.split(",")}


def one_process_logs(model_dir: str, out_dir: pathlib.Path) -> dict:
    """The same run in this process on one rank with the whole global batch (no launcher, no sharding)."""
    import sharded_grpo_script

    trainer = sharded_grpo_script.fixed_trainer(model_dir, str(out_dir), processes=1)
    trainer.train()
    return sharded_grpo_script.step_logs(trainer)


def by_step(logs: dict) -> dict:
    return {key: {int(step): value for step, value in values.items()} for key, values in logs.items()}


def check_ranks_agree(ranks: list[dict]) -> None:
    assert [r["engine"]["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["logs"] == ranks[1]["logs"]  # logged values are reduced over ranks: identical


def check_matches_one_process(ranks: list[dict], single: dict) -> None:
    logs = by_step(ranks[0]["logs"])
    steps = sorted(by_step(single)["loss"])
    assert steps == [1, 2, 3, 4, 5] and sorted(logs["loss"]) == steps
    for key in ("loss", "grad_norm", "kl"):
        for step in steps:
            assert logs[key][step] == pytest.approx(single[key][step], rel=REL, abs=ABS), (key, step)
    assert any(abs(v) > 1e-3 for v in single["loss"].values())  # a run that trains, not a run of zeros


def check_refresh(ranks: list[dict], expected_batches=(2, 4)) -> None:
    """π_ref ← π_θ before generation batches 2 and 4: the gathered reference equals the policy, KL = 0 right after."""
    for rank in ranks:
        refreshes = rank["refreshes"]
        assert [r["before_generation_batch"] for r in refreshes] == list(expected_batches)
        assert all(r["reference_equals_policy"] and r["compared"] > 0 for r in refreshes)
        kl = by_step(rank["logs"])["kl"]
        # step k+1 trains on generation batch k: steps 1, 3, 5 are the first after the start / a refresh
        for step in sorted(kl):
            if step - 1 in (0, *expected_batches):
                assert kl[step] == 0.0, (step, kl)
            else:
                assert kl[step] > 1e-4, (step, kl)


def check_resume(ranks: list[dict], checkpoint: pathlib.Path, model_dir: str | None, steps=(4, 5)) -> None:
    """A run resumed from checkpoint-3 (saved after the first refresh) continues exactly like the uninterrupted one.

    ``model_dir``: the full reference must match that model's tensors; None: PEFT, the file holds the "ref" adapter.
    """
    import torch

    from trl_grpo_plus.trainer import REFERENCE_FILE, STATE_FILE

    for rank in ranks:
        uninterrupted, resumed = by_step(rank["logs"]), by_step(rank["resumed_logs"])
        assert sorted(resumed["loss"]) == sorted(uninterrupted["loss"])
        for key in ("loss", "grad_norm", "kl"):
            for step in steps:
                assert resumed[key][step] == pytest.approx(uninterrupted[key][step], rel=1e-6, abs=1e-9), (key, step)
    assert (checkpoint / STATE_FILE).is_file()
    # one file of full, plain tensors (not one rank's shards, not DTensors): it loads without torch.distributed
    reference = torch.load(checkpoint / REFERENCE_FILE, weights_only=True)
    assert reference and all(type(t) is torch.Tensor for t in reference.values())
    if model_dir is None:
        assert all(".ref." in name for name in reference)
        return
    from safetensors.torch import load_file

    model = load_file(os.path.join(model_dir, "model.safetensors"))
    assert {k: tuple(reference[k].shape) for k in model} == {k: tuple(t.shape) for k, t in model.items()}
