"""BenchmarkCallback evaluates the policy during GRPO training and logs through the trainer."""

import pytest
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
from trl_grpo_plus.benchmarks import Example
from trl_grpo_plus.benchmarks.prompts import chat_messages
from trl_grpo_plus.callbacks import BenchmarkCallback
from trl_grpo_plus.demo import shipped_model_dir
from trl_grpo_plus.demo_task import addition_rows
from trl_grpo_plus.rewards import get_verifier


def to_example(row, index):
    return Example(id=str(index), question=row["question"], gold=row["answer"])


def test_benchmark_callback_logs_accuracy_every_n_steps(tmp_path):
    model_dir = shipped_model_dir()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = addition_rows(8, seed=3)
    train = Dataset.from_list([{"prompt": chat_messages(r["question"]), "answer": r["answer"]}
                               for r in addition_rows(8, seed=2)])
    callback = BenchmarkCallback("math", every_n_steps=2, limit=6, rows=rows, to_example=to_example, max_new_tokens=40)
    cfg = GRPOPlusConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_steps=3, num_generations=4,
                         per_device_train_batch_size=8, max_completion_length=40, logging_steps=1,
                         save_strategy="no", report_to="none", activation_checkpointing=False)
    trainer = GRPOPlusTrainer(model=model, reward_funcs=[get_verifier("math")], args=cfg, train_dataset=train,
                              processing_class=tok, callbacks=[callback])
    assert callback.trainer is trainer  # bound by GRPOPlusTrainer
    trainer.train()
    # step 2 (every_n_steps) and step 3 (end of training)
    assert [h["step"] for h in callback.history] == [2, 3]
    logged = [h for h in trainer.state.log_history if "eval_math/accuracy" in h]
    assert [h["step"] for h in logged] == [2, 3]
    for h in logged:
        acc = h["eval_math/accuracy"]
        assert 0.0 <= h["eval_math/accuracy_ci95_low"] <= acc <= h["eval_math/accuracy_ci95_high"] <= 1.0
        assert acc * 6 == pytest.approx(round(acc * 6))  # a count out of the 6 problems
    assert model.training  # restored to train mode after each evaluation


def test_unknown_benchmark_fails_at_construction():
    with pytest.raises(Exception, match="gsm8k"):
        BenchmarkCallback("gsm9k")
    with pytest.raises(ValueError, match="every_n_steps"):
        BenchmarkCallback("gsm8k", every_n_steps=0)
