"""Two processes (torchrun, gloo, CPU): advantages are computed on the rewards of all processes, so a group split
across ranks gets the same advantages as one process would compute on the same global batch.

`accelerate launch --cpu --num_processes 2` silently starts ONE process, hence torchrun; and on CPU the config
needs use_cpu=True, or accelerate does not join the torchrun processes (GRPOPlusConfig refuses that case).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from grpo_testlib import CharStepsReward, oracle_advantages, oracle_process_advantages

HERE = pathlib.Path(__file__).resolve().parent


def _run_two_ranks(tiny_model_dir, tmp_path, *mode):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(HERE / "dist_grpo_script.py"), tiny_model_dir, str(tmp_path), *mode]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    return ranks


@pytest.mark.slow
def test_two_processes_compute_group_advantages_on_the_global_batch(tiny_model_dir, tmp_path):
    ranks = _run_two_ranks(tiny_model_dir, tmp_path)

    for gen in range(len(ranks[0]["records"])):
        rewards = ranks[0]["records"][gen]["rewards"]  # gathered: identical on both ranks
        assert rewards == ranks[1]["records"][gen]["rewards"]
        local = [ranks[r]["records"][gen]["advantages"] for r in (0, 1)]
        # a generation batch is one group of G=4: 2 completions on each rank
        assert len(rewards) == 4 and len(local[0]) == len(local[1]) == 2
        expected = oracle_advantages(rewards, 4, "population")  # one process, same global batch
        assert local[0] + local[1] == pytest.approx(expected, abs=1e-6)
        assert any(abs(a) > 0 for a in expected)

    assert ranks[0]["param_checksum"] == pytest.approx(ranks[1]["param_checksum"], rel=1e-6)  # DDP kept them equal
    assert len(ranks[0]["records"]) == 2 and len(ranks[0]["losses"]) == 4


@pytest.mark.slow
def test_two_processes_normalise_step_rewards_over_the_whole_group(tiny_model_dir, tmp_path):
    # process supervision: each group of G = 4 has 2 completions on each rank; r̃ needs the steps of all four
    from transformers import AutoTokenizer

    from trl_grpo_plus.step_rewards import step_end_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)

    ranks = _run_two_ranks(tiny_model_dir, tmp_path, "process")
    signal = 0
    for gen in range(len(ranks[0]["records"])):
        completions = ranks[0]["records"][gen]["completion_ids"] + ranks[1]["records"][gen]["completion_ids"]
        local = ranks[0]["records"][gen]["advantages"] + ranks[1]["records"][gen]["advantages"]  # rows [T_rank]
        steps = []
        for ids in completions:
            text_steps = CharStepsReward.steps(decode(ids))
            tokens = step_end_tokens(decode, ids, decode(ids), [o for o, _ in text_steps]) if text_steps else []
            steps.append([(t, r) for t, (_, r) in zip(tokens, text_steps)])
        expected = oracle_process_advantages(steps, 4, "population")  # one process, the whole group
        for row, want in zip(local, expected):
            assert row[: len(want)] == pytest.approx(want, abs=1e-5)
            assert all(v == 0.0 for v in row[len(want) :])
            signal += any(abs(v) > 0 for v in want)
    assert signal > 0
    assert ranks[0]["param_checksum"] == pytest.approx(ranks[1]["param_checksum"], rel=1e-6)


@pytest.mark.slow
def test_two_processes_agree_on_dynamic_sampling_rounds(tiny_model_dir, tmp_path):
    import re

    ranks = _run_two_ranks(tiny_model_dir, tmp_path, "dynamic")
    assert ranks[0]["rounds"] == ranks[1]["rounds"] and len(ranks[0]["rounds"]) == 4  # same rounds on every rank
    assert max(ranks[0]["rounds"]) > 1  # some rank drew an even (all-equal) prompt and both regenerated
    for gen in range(4):
        totals = {r["kept"][gen]["tokens"] for r in ranks}
        assert len(totals) == 1  # the recomputed token count is global
        for r in ranks:
            indices = {int(re.search(r"Question (\d+)", t).group(1)) for t in r["kept"][gen]["prompts"]}
            assert len(indices) == 1 and indices.pop() % 2 == 1  # one whole group, with signal, per rank
    assert ranks[0]["param_checksum"] == pytest.approx(ranks[1]["param_checksum"], rel=1e-6)
