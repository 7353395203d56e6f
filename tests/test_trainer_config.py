"""GRPOPlusConfig: fields documented with formulas, the DeepSeekMath preset, and every contradiction rejected
with a message that names the fix. Also the TRL version gate."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer, _trl_compat

NEW_FIELDS = ["std_estimator", "advantage_epsilon", "kl_estimator", "kl_clamp", "shuffle_each_iteration",
              "ref_refresh_steps", "reward_failure_window", "reward_failure_fraction", "partial_reward_failure",
              "process_supervision", "dynamic_sampling", "dynamic_sampling_max_rounds"]


def cfg(**kwargs):
    kwargs.setdefault("bf16", False)
    return GRPOPlusConfig(output_dir="unused", report_to=[], **kwargs)


def test_every_new_field_has_help_with_its_formula_and_literal_types():
    fields = {f.name: f for f in dataclasses.fields(GRPOPlusConfig)}
    formula_marks = {"std_estimator": "sqrt", "advantage_epsilon": "σ + ε", "kl_estimator": "exp(Δ) − Δ − 1",
                     "kl_clamp": "clamp(", "shuffle_each_iteration": "μ", "ref_refresh_steps": "π_ref ← π_θ",
                     "reward_failure_window": "failed_k / samples ≥", "reward_failure_fraction": "failed_k / samples",
                     "partial_reward_failure": "Σ_k w_k r_ik", "process_supervision": "Â_{i,t} = Σ_{index(j) ≥ t} r̃_j",
                     "dynamic_sampling": "generation_batch_size / G", "dynamic_sampling_max_rounds": "1 + "}
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
    assert c.vllm_importance_sampling_correction is False and c.disable_dropout is True
    assert c.steps_per_generation == c.gradient_accumulation_steps == 1  # one policy update per exploration stage
    g = GRPOPlusConfig.deepseekmath(output_dir="unused", bf16=False, per_device_train_batch_size=16,
                                    gradient_accumulation_steps=4)
    assert g.steps_per_generation == 4 and g.generation_batch_size == 64
    for bad in (dict(num_iterations=2), dict(steps_per_generation=4), dict(generation_batch_size=256)):
        with pytest.raises(ValueError, match="one policy update per exploration stage"):
            GRPOPlusConfig.deepseekmath(output_dir="unused", bf16=False, per_device_train_batch_size=64, **bad)
    assert "DeepSeekMath GRPO, Shao et al. 2024 preset" in c.objective_formula()
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


def test_dapo_and_dr_grpo_presets():
    d = GRPOPlusConfig.dapo(output_dir="unused", bf16=False, per_device_train_batch_size=16)
    assert (d.epsilon, d.epsilon_high, d.loss_type, d.beta, d.num_generations) == (0.2, 0.28, "dapo", 0.0, 16)
    assert d.dynamic_sampling and d.steps_per_generation == 16 and d.scale_rewards == "group"
    text = d.objective_formula()
    for piece in ["DAPO, Yu et al. 2025 preset", "clip(ρ_it, 0.8, 1.28)", "1/Σ_i|o_i|", "dynamic sampling (DAPO)"]:
        assert piece in text, piece
    assert "KL" not in text
    assert GRPOPlusConfig.dapo(output_dir="u", bf16=False, per_device_train_batch_size=16,
                               gradient_accumulation_steps=2).steps_per_generation == 32
    r = GRPOPlusConfig.dr_grpo(output_dir="unused", bf16=False, per_device_train_batch_size=8)
    assert (r.loss_type, r.scale_rewards, r.beta, r.resolved_std_estimator) == ("dr_grpo", "none", 0.0, "none")
    text = r.objective_formula()
    for piece in ["Dr. GRPO, Liu et al. 2025 preset", "1/(G·L_max)", "L_max = max_completion_length = 3000",
                  "Â_i = r_i − mean_group(r)"]:
        assert piece in text, piece


def test_objective_formula_names_every_term_that_changes_the_loss():
    text = cfg(delta=2.0, top_entropy_quantile=0.2, off_policy_mask_threshold=0.5, entropy_coef=0.01,
               mask_truncated_completions=True, use_vllm=True, vllm_importance_sampling_mode="token_truncate",
               vllm_importance_sampling_clip_min=0.5, vllm_importance_sampling_clip_max=3.0).objective_formula()
    for piece in ["w_it·H_it·M_i·min(min(ρ_it, δ)·Â_i", "− 0.01·Ent", "capped at δ = 2",
                  "w_it = π_old(o_it)/π_vLLM(o_it), token_truncate (clipped to [0.5, 3])",
                  "top 0.2 fraction", "M_i = 0 when Â_i < 0", "> 0.5", "mask_truncated_completions=True",
                  "kept by H_it"]:
        assert piece in text, piece
    off = cfg(use_vllm=True, vllm_importance_sampling_correction=False).objective_formula()
    assert "no vLLM importance-sampling correction" in off and "w_it" not in off
    plain = cfg().objective_formula()
    assert "w_it" not in plain and "H_it" not in plain and "M_i" not in plain and "Ent" not in plain


def test_normalize_then_sum_divides_by_a_std_even_with_scale_rewards_none():
    # TRL's normalize_then_sum ignores scale_rewards: per-function group std, then a batch std
    c = cfg(multi_objective_aggregation="normalize_then_sum", scale_rewards="none", std_estimator="population")
    assert c.resolved_std_estimator == "population"
    text = c.objective_formula()
    assert "std_population,batch(s) + 0.0001" in text and "std_population,group(r_k)" in text
    assert "Â_i = r_i − mean_group(r)" not in text
    assert cfg(multi_objective_aggregation="normalize_then_sum", scale_rewards="none",
               advantage_epsilon=1e-3).advantage_epsilon == 1e-3


def test_partial_failure_and_process_supervision_show_in_the_objective():
    assert "dropped (NaN, Â = 0)" in cfg(partial_reward_failure="drop").objective_formula()
    assert "TRL's nansum" in cfg().objective_formula()
    text = cfg(process_supervision=True, std_estimator="population").objective_formula()
    assert "Â_it = Σ_{index(j) ≥ t} r̃_j" in text and "(r_j − mean(R)) / (std_population,group(R) + 0.0001)" in text
    assert "min(ρ_it·Â_it" in text


@pytest.mark.parametrize(("kwargs", "fix"), [
    (dict(reward_failure_window=-1), "integer ≥ 0"),
    (dict(reward_failure_fraction=0.0), r"in \(0, 1\]"),
    (dict(partial_reward_failure="nan"), "'zero', 'drop'"),
    (dict(process_supervision=True, loss_type="cispo"), "Pick a clipped-surrogate loss_type"),
    (dict(process_supervision=True, multi_objective_aggregation="normalize_then_sum"), "sum_then_normalize"),
    (dict(dynamic_sampling=True, scale_rewards="batch"), "Set scale_rewards='group'"),
    (dict(dynamic_sampling=True, dynamic_sampling_max_rounds=0), "integer ≥ 1"),
])
def test_new_field_contradictions_name_the_fix(kwargs, fix):
    kwargs.setdefault("num_generations", 8)
    kwargs.setdefault("per_device_train_batch_size", 8)
    with pytest.raises(ValueError, match=fix):
        cfg(**kwargs)


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
