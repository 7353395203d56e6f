"""Packaging: rewards/ and benchmarks/ install inside trl_grpo_plus, never at top level."""

import importlib
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_editable_install_maps_rewards_and_benchmarks_inside_the_namespace():
    rewards = importlib.import_module("trl_grpo_plus.rewards")
    benchmarks = importlib.import_module("trl_grpo_plus.benchmarks")
    assert pathlib.Path(rewards.__file__).resolve().parent == REPO / "rewards"
    assert pathlib.Path(benchmarks.__file__).resolve().parent == REPO / "benchmarks"


def test_regular_install_has_no_top_level_rewards_or_benchmarks(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)],
        check=True,
    )
    top_level = {p.name for p in target.iterdir()}
    assert "trl_grpo_plus" in top_level
    assert not {"rewards", "benchmarks", "algos", "tests"} & top_level, top_level
    assert (target / "trl_grpo_plus" / "rewards" / "registry.py").is_file()
    assert (target / "trl_grpo_plus" / "benchmarks" / "speed" / "__init__.py").is_file()
    # the demo model ships as package data (and stays small)
    demo_model = target / "trl_grpo_plus" / "assets" / "demo-model"
    assert (demo_model / "config.json").is_file() and (demo_model / "model.safetensors").is_file()
    assert sum(f.stat().st_size for f in demo_model.iterdir()) <= 5 * 1024 * 1024
    # Import from the installed copy only (run from an empty dir so the repo is not on sys.path).
    code = ("import trl_grpo_plus.rewards as r, trl_grpo_plus.benchmarks as b, pathlib, sys;"
            f"assert pathlib.Path(r.__file__).is_relative_to({str(target)!r}), r.__file__;"
            "assert pathlib.Path(b.__file__).parent.name == 'benchmarks';"
            "import importlib.util as u; assert u.find_spec('rewards') is None and u.find_spec('benchmarks') is None")
    env = dict(os.environ, PYTHONPATH=str(target))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)


def test_untested_trl_message_says_how_to_proceed(monkeypatch):
    from trl_grpo_plus import _trl_compat

    monkeypatch.delenv(_trl_compat.ALLOW_ENV, raising=False)
    try:
        _trl_compat.check_trl_version("1.17.0")
    except ImportError as exc:
        message = str(exc)
    else:
        raise AssertionError("trl 1.17.0 was accepted")
    for way in ('pip install "trl>=1.16,<1.17"', "pip install -U trl-grpo-plus", f"{_trl_compat.ALLOW_ENV}=1",
                "tests/test_trainer_trl_equivalence.py"):
        assert way in message, way
    assert (REPO / "tests" / "test_trainer_trl_equivalence.py").is_file()  # the test it names exists


def test_dependency_ranges_accept_what_trl_accepts():
    """pyproject's lower bounds are trl 1.16's own except where a break was measured; no upper bound but trl's."""
    import tomllib

    from packaging.requirements import Requirement

    deps = {Requirement(d).name: Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())
            ["project"]["dependencies"]}
    # measured breaks: transformers 5.22 has no TrainingArguments.activation_checkpointing (new in 5.23); accelerate
    # before 1.15 fails FSDP2 (tests/test_fsdp.py). Everything else is TRL 1.16's own floor.
    for name, floor in (("transformers", "5.23.0"), ("accelerate", "1.15.0"), ("datasets", "4.7.0"), ("peft", "0.13.0")):
        assert deps[name].specifier.contains(floor), (name, str(deps[name].specifier))
        assert deps[name].specifier.contains("99.0"), f"{name} has an upper bound: {deps[name].specifier}"
    assert not deps["transformers"].specifier.contains("5.22.0") and not deps["accelerate"].specifier.contains("1.14.0")
    assert not deps["trl"].specifier.contains("1.17.0") and deps["trl"].specifier.contains("1.16.0")
