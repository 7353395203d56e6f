"""DeepSpeed ZeRO-2 / ZeRO-3 on two CPU processes through `accelerate launch` with examples/accelerate/zero{2,3}_cpu.yaml.

DeepSpeed's CPU accelerator runs over gloo with torch 2.13 (no Intel extension needed); no shim is needed. The
first run JIT-builds DeepSpeed's small shared-memory op (g++, ninja; cached in ~/.cache/torch_extensions).
Skipped when deepspeed is not installed. Tolerances: see sharded_testlib.
"""

from __future__ import annotations

import pytest
from sharded_testlib import (check_matches_one_process, check_ranks_agree, check_refresh, check_resume, launch,
                             one_process_logs)

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.slow

MODES = {2: "fixed", 3: "fixed,peft"}


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero(request, tiny_model_dir, tmp_path_factory):
    stage = request.param
    out = tmp_path_factory.mktemp(f"zero{stage}")
    return stage, out, launch(f"zero{stage}_cpu.yaml", tiny_model_dir, out, MODES[stage], shim=False)


def test_zero_partitions_what_its_stage_says(zero):
    stage, _, runs = zero
    ranks = runs["fixed"]
    check_ranks_agree(ranks)
    for rank in ranks:
        engine = rank["engine"]
        assert engine["distributed_type"] == "DEEPSPEED" and engine["is_deepspeed_enabled"]
        assert engine["zero_stage"] == stage and not engine["is_fsdp_enabled"]
        full = engine["policy"]["full_numel"]
        assert engine["optimizer_numel"] < 0.6 * full  # fp32 master weights + Adam moments: a partition per rank
        if stage == 2:  # parameters replicated, the reference a plain replica (TRL runs it as ZeRO-0)
            assert engine["policy"]["local_numel"] == full and engine["reference"]["local_numel"] == full
        else:  # parameters partitioned, the reference too
            assert engine["policy"]["local_numel"] < 0.6 * full
            assert engine["reference"]["all_zero3_partitioned"]
            assert engine["reference"]["local_numel"] < 0.6 * engine["reference"]["full_numel"]
    assert sum(r["engine"]["optimizer_numel"] for r in ranks) >= ranks[0]["engine"]["policy"]["full_numel"]


def test_zero_losses_and_grad_norms_equal_one_process_on_the_same_global_batch(zero, tiny_model_dir, tmp_path):
    _, _, runs = zero
    check_matches_one_process(runs["fixed"], one_process_logs(tiny_model_dir, tmp_path))


def test_zero_refresh_gathers_at_most_once(zero):
    stage, _, runs = zero
    check_refresh(runs["fixed"])
    n_params = 26  # the tiny Qwen2's parameter tensors (embeddings tied)
    for rank in runs["fixed"]:
        for refresh in rank["refreshes"]:
            if stage == 2:
                assert refresh["zero3_gathers"] == [] and refresh["collectives"] == {}
            else:  # TRL's sync_target_model: ONE GatheredParameters over policy + reference, rank 0 writes
                assert refresh["zero3_gathers"] == [2 * n_params]


def test_zero_resume_after_a_refresh_equals_the_uninterrupted_run(zero, tiny_model_dir):
    _, out, runs = zero
    check_resume(runs["fixed"], out / "run" / "checkpoint-3", tiny_model_dir)


def test_zero3_peft_lora_refresh_writes_the_partitioned_adapter_and_resumes(zero):
    stage, out, runs = zero
    if stage != 3:
        pytest.skip("PEFT under ZeRO-3 only (ZeRO-2 keeps full parameters: the single-process path)")
    ranks = runs["peft"]
    check_ranks_agree(ranks)
    check_refresh(ranks, expected_batches=(2,))  # KL 0 after the refresh: the write reached the partitions
    for rank in ranks:
        assert [r["zero3_gathers"] for r in rank["refreshes"]] == [[16]]  # "ref" + trained adapter, 8 tensors each
    check_resume(ranks, out / "peft" / "checkpoint-3", None, steps=(4,))
