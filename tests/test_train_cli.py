"""`trl-grpo-plus train`: YAML + CLI parsing, the examples, and configuration errors before any model loads."""

import json
import pathlib

import pytest

from trl_grpo_plus import train

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Fields written by hand (not copied from any dataset) with each example's dataset schema.
FIXTURE_ROWS = {
    "gsm8k_grpo.yaml": [{"question": f"Tom has {i} apples and buys 2 more. How many now?",
                         "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(8)],
    "math_grpo.yaml": [{"problem": f"Compute ${i}+{i}$.", "solution": f"It is $\\boxed{{{2 * i}}}$.",
                        "level": "Level 1", "type": "Algebra"} for i in range(8)],
    "code_grpo.yaml": [{"text": f"Write add{i}(x) returning x+{i}.", "code": f"def add{i}(x):\n    return x+{i}",
                        "test_list": [f"assert add{i}(1) == {1 + i}"]} for i in range(8)],
}
# The in-training evaluation's test problems, same schema as the hub split each example names (hand-written).
EVAL_ROWS = {
    "gsm8k": [{"question": f"Sam has {i} cards and gets {i} more. How many cards?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"}
              for i in range(4)],
    "math500": [{"problem": f"What is ${i}^2$?", "solution": f"$\\boxed{{{i * i}}}$", "answer": str(i * i),
                 "subject": "Algebra", "level": 1, "unique_id": f"test/algebra/{i}.json"} for i in range(4)],
}
EXAMPLE_EVAL = {"gsm8k_grpo.yaml": "gsm8k", "math_grpo.yaml": "math500"}
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--activation_checkpointing", "false",
                 "--per_device_train_batch_size", "4", "--num_generations", "4", "--gradient_accumulation_steps", "1",
                 "--max_completion_length", "8", "--max_steps", "1", "--report_to", "none"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("example", sorted(FIXTURE_ROWS))
def test_every_example_parses_and_builds_a_trainer(example, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", FIXTURE_ROWS[example])
    argv = ["--config", str(EXAMPLES / example), "--model_name_or_path", tiny_model_dir, "--dataset_file", data,
            "--output_dir", str(tmp_path / "out"), *CPU_OVERRIDES]
    if example in EXAMPLE_EVAL:
        argv += ["--eval_data_file", write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS[EXAMPLE_EVAL[example]]),
                 "--eval_max_new_tokens", "16"]
    script_args, training_args, model_args = train.parse(argv)
    trainer = train.build_trainer(script_args, training_args, model_args)
    # the YAML's choices reached the config; CLI overrides beat the YAML
    assert training_args.num_generations == 4 and training_args.max_completion_length == 8
    assert [f.__name__ for f in trainer.reward_funcs] == [s["name"] for s in train.parse_verifier_specs(script_args.verifiers)]
    row = trainer.train_dataset[0]
    assert row["prompt"][-1]["role"] == "user" and "{" not in row["prompt"][-1]["content"].split("\\boxed")[0]
    if example in EXAMPLE_EVAL:
        (callback,) = [c for c in trainer.callback_handler.callbacks if type(c).__name__ == "BenchmarkCallback"]
        assert callback.evaluate_kwargs["max_new_tokens"] == 16 and len(callback.load_problems()) == 4
    if example == "math_grpo.yaml":
        assert training_args.num_iterations == 2 and training_args.shuffle_each_iteration
        assert "answer" in trainer.train_dataset.column_names and "question" in trainer.train_dataset.column_names
    if example == "code_grpo.yaml":
        assert training_args.epsilon_high == 0.28 and training_args.loss_type == "dapo"


def test_cli_runs_two_training_steps_and_saves(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", FIXTURE_ROWS["gsm8k_grpo.yaml"])
    out = tmp_path / "out"
    rc = train.main(["--config", str(EXAMPLES / "gsm8k_grpo.yaml"), "--model_name_or_path", tiny_model_dir,
                     "--dataset_file", data, "--output_dir", str(out), "--eval_benchmark", "", *CPU_OVERRIDES,
                     "--max_steps", "2", "--verifiers", "gsm8k:1.0,format:0.5"])
    assert rc == 0
    assert (out / "model.safetensors").is_file()


def config_only_model(tmp_path, tiny_model_dir) -> str:
    """A model folder with the tiny model's config.json and no weights: it passes the model check, and loading
    it would fail, which proves an error reported with it came before any model loads."""
    folder = tmp_path / "config-only-model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text((pathlib.Path(tiny_model_dir) / "config.json").read_text())
    return str(folder)


def _errors(tmp_path, tiny_model_dir, capsys, *extra, rows=None):
    data = write_jsonl(tmp_path / "train.jsonl", rows or FIXTURE_ROWS["gsm8k_grpo.yaml"])
    rc = train.main(["--config", str(EXAMPLES / "gsm8k_grpo.yaml"), "--model_name_or_path", config_only_model(tmp_path,
                     tiny_model_dir), "--dataset_file", data, "--output_dir", str(tmp_path / "o"),
                     "--eval_data_file", write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS["gsm8k"]), *CPU_OVERRIDES, *extra])
    assert rc == 2
    return capsys.readouterr().err


def test_unknown_verifier_is_reported_with_the_valid_names(tmp_path, tiny_model_dir, capsys):
    err = _errors(tmp_path, tiny_model_dir, capsys, "--verifiers", "gsm8k,no_such_verifier")
    assert "no_such_verifier" in err and "gsm8k" in err and "math" in err


def test_missing_column_names_the_column_and_the_fix(tmp_path, tiny_model_dir, capsys):
    rows = [{"question": "q", "solution": "#### 3"}]
    err = _errors(tmp_path, tiny_model_dir, capsys, rows=rows)
    assert "'answer'" in err and "column_mapping" in err


def test_prompt_template_column_missing(tmp_path, tiny_model_dir, capsys):
    err = _errors(tmp_path, tiny_model_dir, capsys, "--prompt_template", "{problem}")
    assert "problem" in err and "prompt_template" in err


def test_contradictory_field_is_rejected(tmp_path, tiny_model_dir, capsys):
    err = _errors(tmp_path, tiny_model_dir, capsys, "--beta", "0.0", "--ref_refresh_steps", "10")
    assert "ref_refresh_steps" in err and "beta" in err


def test_verifier_spec_parsing():
    assert train.parse_verifier_specs("math:1,format:0.2") == [
        {"name": "math", "weight": 1.0, "options": {}}, {"name": "format", "weight": 0.2, "options": {}}]
    assert train.parse_verifier_specs([{"name": "code", "options": {"binary": True}}])[0]["options"] == {"binary": True}
    with pytest.raises(train.ConfigError, match="weight"):
        train.parse_verifier_specs("math:heavy")
    with pytest.raises(train.ConfigError, match="unknown"):
        train.parse_verifier_specs([{"name": "math", "wieght": 2}])
    assert train.parse_mapping("a:b, c:d", "column_mapping") == {"a": "b", "c": "d"}


def test_math_example_trains_on_all_seven_subjects(monkeypatch):
    """math_grpo.yaml says the 7,500-problem MATH train split: all 7 subject configs, concatenated in order."""
    import datasets

    from trl_grpo_plus.benchmarks.datasets import HENDRYCKS_CONFIGS

    loaded = []

    def fake_load_dataset(name, config, split):
        loaded.append((name, config, split))
        return datasets.Dataset.from_list([{"problem": f"{config} {i}", "solution": "$\\boxed{1}$"} for i in range(2)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    script_args, _, _ = train.parse(["--config", str(EXAMPLES / "math_grpo.yaml"), "--use_cpu", "true"])
    ds = train.load_train_dataset(script_args)
    assert [c for _, c, _ in loaded] == list(HENDRYCKS_CONFIGS) and len(HENDRYCKS_CONFIGS) == 7
    assert {(n, s) for n, _, s in loaded} == {("EleutherAI/hendrycks_math", "train")}
    assert len(ds) == 14 and ds[0]["problem"] == "algebra 0" and ds[13]["problem"] == "precalculus 1"
    assert train.dataset_configs("a, b") == ["a", "b"] and train.dataset_configs(None) == [None]
