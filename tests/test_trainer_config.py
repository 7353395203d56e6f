"""GRPOPlusConfig: fields documented with formulas, the DeepSeekMath preset, and every contradiction rejected
with a message that names the fix. Also the TRL version gate."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer, _trl_compat

NEW_FIELDS = ["std_estimator", "advantage_epsilon", "kl_estimator", "kl_clamp", "shuffle_each_iteration",
              "ref_refresh_steps"]


def cfg(**kwargs):
    kwargs.setdefault("bf16", False)
    return GRPOPlusConfig(output_dir="unused", report_to=[], **kwargs)


def test_every_new_field_has_help_with_its_formula_and_literal_types():
    fields = {f.name: f for f in dataclasses.fields(GRPOPlusConfig)}
    formula_marks = {"std_estimator": "sqrt", "advantage_epsilon": "σ + ε", "kl_estimator": "exp(Δ) − Δ − 1",
                     "kl_clamp": "clamp(", "shuffle_each_iteration": "μ", "ref_refresh_steps": "π_ref ← π_θ"}
    for name in NEW_FIELDS:
        assert formula_marks[name] in fields[name].metadata["help"], name
    hints = typing.get_type_hints(GRPOPlusConfig)
    assert typing.Literal["k1", "k2", "k3"] == hints["kl_estimator"]
    assert typing.Literal["sample", "population"] in typing.get_args(hints["std_estimator"])


def test_defaults_are_trls_behaviour():
    c = cfg()
    assert (c.std_estimator, c.resolved_std_estimator, c.advantage_epsilon) == (None, "sample", 1e-4)
    assert (c.kl_estimator, c.kl_clamp, c.shuffle_each_iteration, c.ref_refresh_steps) == ("k3", None, False, None)
    assert cfg(scale_rewards="none").resolved_std_estimator == "none"


def test_deepseekmath_preset_and_overrides():
    c = GRPOPlusConfig.deepseekmath(output_dir="unused", bf16=False, per_device_train_batch_size=64)
    assert (c.beta, c.kl_estimator, c.loss_type, c.num_generations, c.num_iterations) == (0.04, "k3", "grpo", 64, 1)
    assert (c.learning_rate, c.max_completion_length, c.scale_rewards) == (1e-6, 1024, "group")
    assert c.use_bias_correction_kl is False and c.resolved_std_estimator == "sample"
    o = GRPOPlusConfig.deepseekmath(output_dir="unused", bf16=False, num_generations=8, ref_refresh_steps=50)
    assert (o.num_generations, o.ref_refresh_steps, o.beta) == (8, 50, 0.04)


def test_objective_formula_shows_the_chosen_values():
    text = cfg(beta=0.04, loss_type="dr_grpo", std_estimator="population", kl_estimator="k2", kl_clamp=10.0,
               epsilon_high=0.28, ref_refresh_steps=7, num_iterations=2, shuffle_each_iteration=True,
               use_bias_correction_kl=False).objective_formula()
    for piece in ["1/(G·L_max)", "L_max = max_completion_length = 512", "clip(ρ_it, 0.8, 1.28)", "0.04·KL_it",
                  "std_population,group", "+ 0.0001", "k2 = ½Δ²", "±10", "every 7 generation batches", "μ = 2",
                  "re-drawn every epoch"]:
        assert piece in text, piece


@pytest.mark.parametrize(("kwargs", "fix"), [
    (dict(ref_refresh_steps=10), "Set beta > 0"),
    (dict(ref_refresh_steps=0, beta=0.04), "positive integer"),
    (dict(ref_refresh_steps=10, beta=0.04, sync_ref_model=True), "Use one"),
    (dict(std_estimator="population", scale_rewards="none"), "Drop std_estimator"),
    (dict(std_estimator="population", scale_rewards=False), "Drop std_estimator"),
    (dict(advantage_epsilon=1e-6, scale_rewards="none"), "Drop advantage_epsilon"),
    (dict(advantage_epsilon=-1.0), "≥ 0"),
    (dict(num_generations=1, per_device_train_batch_size=1), "Set num_generations to 2 or more"),
    (dict(std_estimator="bessel"), "'sample', 'population'"),
    (dict(kl_estimator="k4"), "'k1', 'k2', 'k3'"),
    (dict(scale_rewards="global"), "'group', 'batch', 'none'"),
    (dict(loss_type="ppo"), "'grpo', 'bnpo', 'dapo', 'dr_grpo'"),
    (dict(kl_clamp=-1.0, beta=0.04), "positive"),
    (dict(kl_clamp=5.0), "Set beta > 0, or drop kl_clamp"),
    (dict(kl_estimator="k2", beta=0.04, loss_type="cispo"), "Set kl_estimator='k3'"),
    (dict(kl_clamp=5.0, beta=0.04, use_adaptive_entropy=True), "turn use_adaptive_entropy off"),
    (dict(loss_type="dr_grpo", max_completion_length=None), "Set max_completion_length"),
    (dict(num_generations=64), "multiple of num_generations"),
])
def test_contradictions_are_rejected_naming_the_fix(kwargs, fix):
    with pytest.raises(ValueError, match=fix.replace("(", r"\(").replace("+", r"\+")):
        cfg(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 works on this machine")
def test_bf16_default_on_cpu_explains_the_fix():
    with pytest.raises(ValueError, match="pass bf16=False"):
        GRPOPlusConfig(output_dir="unused", report_to=[])


def test_shuffle_each_iteration_without_epochs_warns():
    with pytest.warns(UserWarning, match="no effect with num_iterations=1"):
        cfg(shuffle_each_iteration=True)


def test_command_line_parsing_of_the_new_fields():
    from transformers import HfArgumentParser

    (parsed,) = HfArgumentParser(GRPOPlusConfig).parse_args_into_dataclasses(
        ["--output_dir", "unused", "--bf16", "False", "--beta", "0.04", "--std_estimator", "population",
         "--kl_estimator", "k1", "--kl_clamp", "3", "--ref_refresh_steps", "5", "--report_to", "none"])
    assert (parsed.std_estimator, parsed.kl_estimator, parsed.kl_clamp, parsed.ref_refresh_steps) == \
        ("population", "k1", 3.0, 5)


def test_hand_written_init_repr_eq_cover_every_field():
    """GRPOPlusConfig reuses TRL's generated __init__ (to save ~2 MB); ours must still take, show and compare our
    fields, keep TRL's keyword names in its signature, and name itself in a bad-keyword error."""
    import inspect

    a = cfg(std_estimator="population", kl_estimator="k2", hub_token="SECRET-TOKEN", learning_rate=3e-6)
    assert (a.std_estimator, a.kl_estimator, a.learning_rate, a.kl_clamp) == ("population", "k2", 3e-6, None)
    assert a == cfg(std_estimator="population", kl_estimator="k2", hub_token="SECRET-TOKEN", learning_rate=3e-6)
    assert a != cfg(std_estimator="population", kl_estimator="k1", hub_token="SECRET-TOKEN", learning_rate=3e-6)
    assert a != cfg(std_estimator="population", kl_estimator="k2", hub_token="SECRET-TOKEN", learning_rate=4e-6)
    text = repr(a)
    assert "kl_estimator=k2" in text and "std_estimator=population" in text and "learning_rate=3e-06" in text
    assert "SECRET-TOKEN" not in text  # TrainingArguments masks *_token values
    assert dataclasses.asdict(a)["kl_estimator"] == "k2" and a.to_dict()["std_estimator"] == "population"
    params = inspect.signature(GRPOPlusConfig).parameters
    assert {"output_dir", "beta", "num_generations", *NEW_FIELDS} <= set(params)
    assert params["kl_estimator"].default == "k3" and params["beta"].default == 0.0
    with pytest.raises(TypeError, match=r"GRPOPlusConfig\(\) got an unexpected keyword argument 'kl_estimatr'"):
        cfg(kl_estimatr="k1")


def test_trainer_requires_the_plus_config(tiny_model_dir):
    import trl

    with pytest.raises(TypeError, match="GRPOPlusConfig"):
        GRPOPlusTrainer(model=tiny_model_dir, reward_funcs=lambda **k: [], args=trl.GRPOConfig(
            output_dir="unused", bf16=False, report_to=[]))


@pytest.mark.parametrize("version", ["1.15.2", "1.17.0", "2.0.0", "not-a-version"])
def test_untested_trl_is_refused_with_the_fix(version, monkeypatch):
    monkeypatch.delenv(_trl_compat.ALLOW_ENV, raising=False)
    with pytest.raises(ImportError, match=r'pip install "trl>=1.16,<1.17"'):
        _trl_compat.check_trl_version(version)
    monkeypatch.setenv(_trl_compat.ALLOW_ENV, "1")
    with pytest.warns(RuntimeWarning, match="tested with trl>=1.16,<1.17"):
        _trl_compat.check_trl_version(version)


def test_tested_trl_passes():
    for version in ("1.16.0", "1.16.7"):
        _trl_compat.check_trl_version(version)
