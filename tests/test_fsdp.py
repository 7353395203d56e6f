"""FSDP2 on two CPU processes through `accelerate launch` with examples/accelerate/fsdp2_cpu.yaml (gloo).

accelerate only shards on a multi-device process group; on CPU an FSDP config silently trains as plain data parallel
(with use_cpu: true) or not at all, so the launch goes through examples/accelerate/shard_on_cpu.py and every test
starts from the fact that the model really is sharded (DTensor parameters, trainer.is_fsdp_enabled).
Tolerances: see sharded_testlib.
"""

from __future__ import annotations

import pytest
from sharded_testlib import (check_matches_one_process, check_ranks_agree, check_refresh, check_resume, launch,
                             one_process_logs)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fsdp2(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    return out, launch("fsdp2_cpu.yaml", tiny_model_dir, out, "fixed,peft", shim=True)


def check_sharded(engine: dict, reference: bool = True) -> None:
    assert engine["distributed_type"] == "FSDP" and engine["is_fsdp_enabled"] and engine["is_fsdp2"]
    for name in ("policy", "reference") if reference else ("policy",):
        layout = engine[name]
        assert layout["all_dtensor"], name
        assert layout["local_numel"] < 0.6 * layout["full_numel"], (name, layout)  # about half on each of 2 ranks


def test_fsdp2_shards_the_policy_and_the_reference(fsdp2):
    _, runs = fsdp2
    ranks = runs["fixed"]
    check_ranks_agree(ranks)
    for rank in ranks:
        check_sharded(rank["engine"])
    # the two shards add up to the model
    assert sum(r["engine"]["policy"]["local_numel"] for r in ranks) == ranks[0]["engine"]["policy"]["full_numel"]


def test_fsdp2_losses_and_grad_norms_equal_one_process_on_the_same_global_batch(fsdp2, tiny_model_dir, tmp_path):
    _, runs = fsdp2
    check_matches_one_process(runs["fixed"], one_process_logs(tiny_model_dir, tmp_path))


def test_fsdp2_refresh_copies_the_sharded_policy_into_the_sharded_reference_without_gathering(fsdp2):
    _, runs = fsdp2
    check_refresh(runs["fixed"])
    for rank in runs["fixed"]:
        # same mesh and placements: the copy is shard by shard, nothing is gathered or sent
        assert all(r["collectives"] == {} for r in rank["refreshes"]), rank["refreshes"]


def test_fsdp2_refresh_refuses_shards_laid_out_differently(fsdp2):
    _, runs = fsdp2
    checks = runs["fixed"][0]["layout_checks"]
    assert checks["alike"] is None
    assert "'weight'" in checks["replicated"] and "Replicate" in checks["replicated"]  # a shard-wise copy would be wrong
    assert "'weight'" in checks["plain"] and "a tensor (6, 4)" in checks["plain"]


def test_fsdp2_resume_after_a_refresh_equals_the_uninterrupted_run(fsdp2, tiny_model_dir):
    out, runs = fsdp2
    check_resume(runs["fixed"], out / "run" / "checkpoint-3", tiny_model_dir)


def test_fsdp2_peft_lora_refresh_copies_the_sharded_adapter_and_resumes(fsdp2):
    out, runs = fsdp2
    ranks = runs["peft"]  # real sampled generation from the sharded model, LoRA on q/v, refresh before batch 2
    check_ranks_agree(ranks)
    for rank in ranks:
        check_sharded(rank["engine"], reference=False)
        assert rank["engine"]["reference"] is None  # π_ref is the frozen "ref" adapter, not a second model
        assert [r["compared"] for r in rank["refreshes"]] == [8]  # lora_A/B x q/v x 2 layers
    check_refresh(ranks, expected_batches=(2,))
    check_resume(ranks, out / "peft" / "checkpoint-3", None, steps=(4,))
