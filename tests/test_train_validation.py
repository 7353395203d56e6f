"""`trl-grpo-plus train` fails before training, never during: every check runs before the model loads, each
error names the field, the value and the fix; an error or Ctrl-C mid-run saves a checkpoint and says how to resume;
GGUF checkpoints train through ``--gguf_file``."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from test_train_cli import CPU_OVERRIDES, EVAL_ROWS, EXAMPLES, FIXTURE_ROWS, config_only_model, write_jsonl
from trl_grpo_plus import train
from trl_grpo_plus.callbacks import compact_log_line

REPO = pathlib.Path(__file__).resolve().parents[1]
GSM8K_YAML = str(EXAMPLES / "gsm8k_grpo.yaml")


def run_main(capsys, *argv):
    rc = train.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def base_args(tmp_path, model, *extra, data=None):
    data = data or write_jsonl(tmp_path / "train.jsonl", FIXTURE_ROWS["gsm8k_grpo.yaml"])
    return ["--config", GSM8K_YAML, "--model_name_or_path", model, "--dataset_file", data,
            "--output_dir", str(tmp_path / "out"), "--eval_benchmark", "", *CPU_OVERRIDES, *extra]


def config_error(rc, err):
    """The one error line (datasets' progress bars may precede it on stderr)."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("trl-grpo-plus train: configuration error: ")]
    assert len(lines) == 1, err
    return err


# --------------------------------------------------------------------------------------------------
# the cases of the issue, each a one-line error before anything heavy


def test_missing_config_file(tmp_path, capsys):
    err = config_error(*run_main(capsys, "--config", str(tmp_path / "nonexist.yaml"))[::2])
    assert "config=" in err and "nonexist.yaml" in err and "no such file" in err and "examples/" in err


def test_unknown_yaml_key_gets_did_you_mean(tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text("model_name_or_path: x\nbeat: 0.1\nlearning_rat: 1.0e-6\n")
    err = config_error(*run_main(capsys, "--config", str(tmp_path / "typo.yaml"))[::2])
    assert "unknown field 'beat'. Did you mean 'beta'?" in err
    assert "unknown field 'learning_rat'. Did you mean 'learning_rate'" in err
    assert "fail_with_unknown_args" not in err  # TRL's developer text


def test_unknown_cli_option_gets_did_you_mean_before_other_checks(tmp_path, capsys, tiny_model_dir):
    # bf16 true on CPU (from the YAML) would fail in __post_init__: the typo must be reported, not that
    err = config_error(*run_main(capsys, "--config", GSM8K_YAML, "--bta", "0.1", "--kl_estimater=k1")[::2])
    assert "unknown option '--bta'. Did you mean '--beta'?" in err
    assert "unknown option '--kl_estimater'. Did you mean '--kl_estimator'" in err
    # negated booleans are real options, not typos
    rc, _, err = run_main(capsys, *base_args(tmp_path, str(tmp_path / "missing-model"), "--no_conversational"))
    assert "unknown option" not in config_error(rc, err)


def test_nonexistent_model_path_fails_before_the_dataset_loads(tmp_path, capsys):
    # the dataset file does not exist either: the model is checked first, before any data is read
    rc, _, err = run_main(capsys, *base_args(tmp_path, "/nonexistent/model", data=str(tmp_path / "absent.jsonl")))
    err = config_error(rc, err)
    assert "model_name_or_path='/nonexistent/model': no such folder" in err
    assert "dataset" not in err


def test_hub_model_id_offline_says_how_to_proceed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = config_error(*run_main(capsys, *base_args(tmp_path, "no-such-org/no-such-model-xyz"))[::2])
    assert "model_name_or_path='no-such-org/no-such-model-xyz'" in err and "local-dir" in err


def test_gguf_folder_without_gguf_file_names_the_flag(tmp_path, capsys):
    folder = tmp_path / "gguf-model"
    folder.mkdir()
    (folder / "m.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    err = config_error(*run_main(capsys, *base_args(tmp_path, str(folder)))[::2])
    assert "--gguf_file m.Q4_1.gguf" in err
    # a GGUF file passed as the model: split into folder + file
    err = config_error(*run_main(capsys, *base_args(tmp_path, str(folder / "m.Q4_1.gguf")))[::2])
    assert f"--model_name_or_path {folder} --gguf_file m.Q4_1.gguf" in err


@pytest.mark.parametrize("name, expected", [("absent.gguf", "no such file"), ("fake.gguf", "not a GGUF file")])
def test_bad_gguf_file_is_reported(tmp_path, capsys, name, expected):
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "fake.gguf").write_bytes(b"PK\x03\x04 not gguf")
    err = config_error(*run_main(capsys, *base_args(tmp_path, str(folder), "--gguf_file", name))[::2])
    assert f"gguf_file={name!r}" in err and expected in err


def test_output_dir_that_is_a_file(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "taken").write_text("x")
    err = config_error(*run_main(capsys, *base_args(tmp_path, tiny_model_dir), "--output_dir",
                                 str(tmp_path / "taken"))[::2])
    assert "output_dir=" in err and "is a file" in err


def test_unwritable_output_dir(tmp_path, capsys, tiny_model_dir):
    err = config_error(*run_main(capsys, *base_args(tmp_path, tiny_model_dir), "--output_dir",
                                 "/proc/trl-grpo-plus-test")[::2])
    assert "output_dir='/proc/trl-grpo-plus-test' is not writable" in err


def test_offline_in_training_eval_fails_before_training_and_names_eval_data_file(tmp_path, capsys, tiny_model_dir):
    # no eval_data_file, hub offline (conftest): the first evaluation would have died at step eval_every_n_steps
    argv = [a for a in base_args(tmp_path, config_only_model(tmp_path, tiny_model_dir)) if a != ""]
    argv.remove("--eval_benchmark")
    argv += ["--eval_benchmark", "gsm8k", "--eval_every_n_steps", "2"]
    err = config_error(*run_main(capsys, *argv)[::2])
    assert "eval_benchmark='gsm8k'" in err and "eval_data_file" in err and "--data-file" not in err
    assert not (tmp_path / "out" / "checkpoint-2").exists()
    # a missing eval_data_file too
    err = config_error(*run_main(capsys, *argv, "--eval_data_file", str(tmp_path / "nope.jsonl"))[::2])
    assert "eval_data_file=" in err and "nope.jsonl" in err


def test_verifier_column_missing_is_found_before_the_model_loads(tmp_path, capsys, tiny_model_dir):
    data = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "solution": "#### 3"}])
    err = config_error(*run_main(capsys, *base_args(tmp_path, config_only_model(tmp_path, tiny_model_dir), data=data))[::2])
    assert "verifier 'gsm8k' reads column 'answer'" in err and "column_mapping" in err


def test_explicit_bf16_is_not_called_a_default(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("bf16: true\nuse_cpu: false\n")
    err = config_error(*run_main(capsys, "--config", str(tmp_path / "c.yaml"))[::2])
    if "bf16" not in err:
        pytest.skip("this machine has a bf16-capable accelerator")
    assert "bf16=None" not in err and "bf16 is set to true in the YAML" in err and "--bf16 false" in err


def test_help_leads_with_config_and_our_fields(capsys):
    rc, out, _ = run_main(capsys, "--help")
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) < 150
    assert lines[0].startswith("usage: trl-grpo-plus train --config")
    first_option = next(line for line in lines if line.lstrip().startswith("--"))
    assert first_option.strip().startswith("--config")
    for name in ("--eval_data_file", "--gguf_file", "--std_estimator", "--kl_estimator", "--ref_refresh_steps"):
        assert name in out
    assert "--help-all" in out and out.index("--ref_refresh_steps") < out.index("--help-all")
    rc, out, _ = run_main(capsys, "--help-all")
    assert rc == 0 and "--per_device_train_batch_size" in out and len(out.splitlines()) > 300


# --------------------------------------------------------------------------------------------------
# mid-run errors and Ctrl-C


class FailAtStep:
    """A TrainerCallback raising at the end of a given step (an error that no check can foresee)."""

    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # every other event: nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("disk quota exceeded (simulated)")


def test_error_mid_run_saves_a_checkpoint_then_resumes(tmp_path, capsys, tiny_model_dir):
    argv = base_args(tmp_path, tiny_model_dir, "--max_steps", "3", "--save_strategy", "no")
    script_args, training_args, model_args = train.parse(argv)
    trainer = train.build_trainer(script_args, training_args, model_args)
    trainer.add_callback(FailAtStep(2))
    rc = train.run_training(trainer, training_args, argv)
    err = capsys.readouterr().err
    assert rc == 1
    checkpoint = tmp_path / "out" / "checkpoint-2"
    last = err.strip().splitlines()[-1]
    assert "stopped by RuntimeError: disk quota exceeded (simulated) at step 2" in last
    assert f"--resume_from_checkpoint {checkpoint}" in last and last.count("--resume_from_checkpoint") == 1
    assert "Traceback" not in err and "disk quota" in (tmp_path / "out" / "train_error.log").read_text()
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "model.safetensors").is_file()

    # the printed command resumes: parse it back (everything after `trl-grpo-plus train`)
    import shlex

    resume_argv = shlex.split(last.split("Resume with: ", 1)[1])[2:]
    script_args, training_args, model_args = train.parse(resume_argv)
    assert training_args.resume_from_checkpoint == str(checkpoint)
    trainer = train.build_trainer(script_args, training_args, model_args)
    assert train.run_training(trainer, training_args, resume_argv) == 0
    assert trainer.state.global_step == 3
    # the resumed run did step 3 only (steps 1-2 came from the checkpoint; step 2 failed before it was logged)
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 3]


def test_error_before_the_first_step_says_nothing_to_resume(tmp_path, capsys, tiny_model_dir):
    argv = base_args(tmp_path, tiny_model_dir)
    script_args, training_args, model_args = train.parse(argv)
    trainer = train.build_trainer(script_args, training_args, model_args)

    class FailAtBegin(FailAtStep):
        def on_train_begin(self, *args, **kwargs):
            raise RuntimeError("boom")

    trainer.add_callback(FailAtBegin(0))
    assert train.run_training(trainer, training_args, argv) == 1
    err = capsys.readouterr().err
    assert "at step 0" in err and "nothing to resume" in err and not list((tmp_path / "out").glob("checkpoint-*"))


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", FIXTURE_ROWS["gsm8k_grpo.yaml"] * 50)
    argv = base_args(tmp_path, tiny_model_dir, "--max_steps", "400", "--save_strategy", "no", data=data)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "trl_grpo_plus", "train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # the compact progress lines
        seen.append(line)
        if line.startswith("step 3/400 |"):
            break
        assert time.monotonic() < deadline, "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("trl-grpo-plus train: interrupted (Ctrl-C) at step "), last
    step = int(last.split("at step ")[1].split(".")[0])
    assert step >= 3 and (tmp_path / "out" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert f"--resume_from_checkpoint {tmp_path / 'out' / f'checkpoint-{step}'}" in last
    # progress: one compact line per logging step, not transformers' raw dict
    assert any(" | reward " in s and " | kl " in s and " s/step | ETA " in s for s in seen), seen
    assert not any(s.startswith("{'loss'") for s in seen + out.splitlines())


# --------------------------------------------------------------------------------------------------
# GGUF


def write_tiny_gguf(model_dir: str, path: pathlib.Path) -> None:
    """Write the tiny Qwen2 (weights, config, byte-level BPE, chat template) as an F32 GGUF with the gguf package."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("tiny-qwen2")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    rope = getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"]
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    spec = json.loads(tok.backend_tokenizer.to_str())
    tokens = [None] * len(tok)
    for text, i in spec["model"]["vocab"].items():
        tokens[i] = text
    control = {a["id"] for a in spec["added_tokens"]}
    for added in spec["added_tokens"]:
        tokens[added["id"]] = added["content"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, cfg.num_hidden_layers)
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":  # tied to the embedding
            continue
        base, suffix = key.rsplit(".", 1)
        w.add_tensor(f"{names.get_name(base)}.{suffix}", value.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_train_from_a_gguf_file(tmp_path, capsys, tiny_model_dir):
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path / "gguf"
    folder.mkdir()
    write_tiny_gguf(tiny_model_dir, folder / "tiny.F32.gguf")
    rc, out, err = run_main(capsys, *base_args(tmp_path, str(folder), "--gguf_file", "tiny.F32.gguf",
                                               "--max_steps", "2"))
    assert rc == 0, err[-3000:]
    copy = tmp_path / "out" / "base-model"
    assert (copy / "config.json").is_file() and (copy / "gguf_source.json").is_file()
    # the trainable copy is the GGUF's model: same logits as transformers' own gguf_file= load, same token ids
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny_model_dir)("Add 47 and 38.").input_ids])
    via_gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file="tiny.F32.gguf")
    copied = AutoModelForCausalLM.from_pretrained(copy)
    assert torch.equal(via_gguf(ids).logits, copied(ids).logits)
    assert AutoTokenizer.from_pretrained(copy)("Add 47 and 38.").input_ids == ids[0].tolist()
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out")  # the trained model was saved
    assert trained(ids).logits.shape == copied(ids).logits.shape
    # a second run reuses the copy (same source file) instead of converting again
    mtime = (copy / "model.safetensors").stat().st_mtime_ns
    assert train.main(base_args(tmp_path, str(folder), "--gguf_file", "tiny.F32.gguf", "--max_steps", "1")) == 0
    assert (copy / "model.safetensors").stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------------------------------
# progress line


def test_compact_log_line():
    logs = {"loss": 0.00341, "reward": 0.53, "rewards/math/mean": 0.41, "rewards/math/std": 0.2,
            "rewards/format/mean": 0.95, "kl": 0.00123, "entropy": 2.0, "learning_rate": 1e-6}
    line = compact_log_line(logs, step=12, max_steps=200, seconds_per_step=1.5)
    # 188 steps left x 1.5 s = 282 s = 4m42s
    assert line == ("step 12/200 | reward 0.530 (math 0.410, format 0.950) | kl 0.00123 | loss 0.00341 | "
                    "1.50 s/step | ETA 4m42s")
    assert compact_log_line({"loss": 1.0}, 1, 10, None) == "step 1/10 | loss 1"
    assert compact_log_line({"train_runtime": 3.0}, 10, 10, 1.0) is None
    assert compact_log_line({"eval_gsm8k/accuracy": 0.25, "eval_gsm8k/accuracy_ci95_low": 0.1}, 5, 10, 1.0) == \
        "step 5/10 | eval_gsm8k/accuracy 0.25"
    assert compact_log_line({"loss": 1.0}, 0, 7200, 1.0).endswith("ETA 2h00m")
