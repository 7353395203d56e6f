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
