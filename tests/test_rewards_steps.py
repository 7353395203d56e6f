"""The gsm8k_steps verifier: calculator tags checked line by line, the step-reward form, real GSM8K solutions, and a
trainer run on tokenised worked solutions (process supervision end to end)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from trl_grpo_plus.rewards import get_verifier, list_verifiers
from trl_grpo_plus.rewards.gsm8k_steps import check_tag, evaluate_arithmetic, solution_steps
from trl_grpo_plus.step_rewards import check_steps


@pytest.mark.parametrize(("expr", "result", "after", "expected"), [
    ("48/2", "24", "24", True),
    ("48/2", "24", None, True),
    ("48/2", "25", "25", False),  # wrong result
    ("48/2", "24", "26", False),  # the text after the tag contradicts it
    ("12*0.5", "6", "6", True),
    ("10/3", "3.33", "3.33", True),  # rounded to the decimals written
    ("10/3", "3.34", None, False),
    ("100/3", "33", None, True),  # written as a whole number: rounded to 0 decimals
    ("1,000+250", "1,250", "1,250", True),  # thousands separators
    ("$5*3", "$15", None, True),
    ("3/4", "3/4", "3/4", True),  # a fraction result and the same fraction after the tag
    ("2**3", "8", None, True),
    ("3 x 4", "12", None, True),  # a product written with x or ×
    ("3×4÷2", "6", None, True),
    ("x+2", "5", None, None),  # a variable: cannot check
    ("(5+2)*3-1", "20", None, True),
    ("5 apples*2", "10", None, None),  # not arithmetic: cannot check
    ("__import__('os')", "0", None, None),  # never evaluated
    ("2**1000", "1", None, None),  # power too large
    ("1/0", "0", None, None),
])
def test_check_tag_table(expr, result, after, expected):
    assert check_tag(expr, result, after) is expected


def test_evaluate_arithmetic_is_exact():
    assert evaluate_arithmetic("0.1+0.2") == evaluate_arithmetic("3/10")
    assert evaluate_arithmetic("7//2") == 3 and evaluate_arithmetic("7%4") == 3 and evaluate_arithmetic("-3+1") == -2
    assert evaluate_arithmetic("") is None and evaluate_arithmetic("print(1)") is None


SOLUTION = "Ann buys 3 packs of 4 pens: 3*4 = <<3*4=12>>12 pens.\nShe gives 5 away.\n12-5 = <<12-5=7>>7\n#### 7"


def test_solution_steps_are_tagged_lines_with_their_end_offsets():
    steps = solution_steps(SOLUTION)
    first_end = SOLUTION.index("\n")
    second_end = SOLUTION.index("\n#### 7")
    assert steps == [(first_end, [True]), (second_end, [True])]


def test_verifier_returns_one_step_per_tagged_line_plus_the_answer():
    verifier = get_verifier("gsm8k_steps")
    wrong = SOLUTION.replace("<<12-5=7>>7", "<<12-5=8>>8").replace("#### 7", "#### 8")
    (good,), (bad,) = (verifier(prompts=["q"], completions=[c], answer=["#### 7"]) for c in (SOLUTION, wrong))
    ends = [SOLUTION.index("\n"), SOLUTION.index("\n#### 7"), len(SOLUTION)]
    assert good == [(ends[0], 1.0), (ends[1], 1.0), (ends[2], 1.0)]
    assert bad == [(ends[0], 1.0), (ends[1], 0.0), (len(wrong), 0.0)]
    assert check_steps(good, "gsm8k_steps", 0) == good  # the documented step-reward form
    assert verifier.stats["steps_wrong"] == 1 and verifier.stats["answer_wrong"] == 1


def test_no_tags_no_answer_and_missing_gold():
    verifier = get_verifier("gsm8k_steps", answer_weight=2.0)
    assert verifier(prompts=["q"], completions=["I think it is 7."], answer=["7"]) == [[(16, 0.0)]]  # strict: no answer
    assert verifier(prompts=["q"], completions=["#### 7"], answer=["7"]) == [[(6, 2.0)]]
    assert verifier(prompts=["q"], completions=["#### 7"], answer=["no number"]) == [None]
    assert verifier(prompts=["q"], completions=[""], answer=["7"]) == [[(1, 0.0)]]
    mean = get_verifier("gsm8k_steps", return_steps=False)
    wrong_tag = SOLUTION.replace("<<3*4=12>>12", "<<3*4=13>>13")
    assert mean(prompts=["q"], completions=[wrong_tag], answer=["7"]) == [pytest.approx(2 / 3)]
    assert "gsm8k_steps" in list_verifiers()


def test_every_real_gsm8k_solution_checks_and_every_corrupted_tag_is_caught(shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()]
    verifier = get_verifier("gsm8k_steps")
    texts = [r["answer"] for r in rows]
    scored = verifier(prompts=["q"] * len(rows), completions=texts, answer=texts)
    assert all(steps and all(r == 1.0 for _, r in steps) for steps in scored)  # measured: 1319 of 1319
    assert verifier.stats["unparsable_tags"] == 0
    tag = re.compile(r"<<([^<>=]+)=(\d+)>>")
    caught = total = 0
    for text in texts:
        match = tag.search(text)
        if match is None:
            continue
        corrupted = text[: match.start(2)] + str(int(match.group(2)) + 1) + text[match.end(2):]
        (steps,) = verifier(prompts=["q"], completions=[corrupted], answer=[text])
        total += 1
        line_step = next(r for end, r in steps if end >= match.start(2))  # the step of the corrupted line
        caught += line_step == 0.0
    assert total > 1000 and caught == total


def test_trainer_turns_gsm8k_steps_into_per_token_advantages(tiny_model_dir, tmp_path):
    """Tokenised worked solutions through GRPOPlusTrainer(process_supervision=True) with gsm8k_steps."""
    from grpo_testlib import cpu_config, oracle_process_advantages
    from transformers import AutoTokenizer

    from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
    from trl_grpo_plus.step_rewards import step_end_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [
        "3*4 = <<3*4=12>>12\n12+5 = <<12+5=17>>17\n#### 17",  # every step right
        "3*4 = <<3*4=13>>13\n13+5 = <<13+5=18>>18\n#### 18",  # first tag wrong, then consistent, answer wrong
        "#### 17",  # answer only
        "3*4 = <<3*4=12>>12\n#### 12",  # tag right, answer wrong
    ]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert [tokenizer.decode(i, skip_special_tokens=True) for i in ids] == texts  # the verifier sees these texts

    def rollout(prompts, trainer):
        return {"prompt_ids": [tokenizer("Q", add_special_tokens=False)["input_ids"]] * len(prompts),
                "completion_ids": [list(ids[i % 4]) for i in range(len(prompts))], "logprobs": None}

    from datasets import Dataset

    dataset = Dataset.from_dict({"prompt": ["Q"], "answer": ["#### 17"]})
    args = cpu_config(GRPOPlusConfig, tmp_path, process_supervision=True, max_steps=1, beta=0.0,
                      std_estimator="population", max_completion_length=64)
    trainer = GRPOPlusTrainer(model=tiny_model_dir, reward_funcs=get_verifier("gsm8k_steps"), args=args,
                              train_dataset=dataset, processing_class=tokenizer, rollout_func=rollout)
    seen = []
    original = trainer._plus_after_generation
    trainer._plus_after_generation = lambda batch, r: seen.append(original(batch, r)) or seen[-1]
    trainer.train()
    (batch,) = seen
    order = [ids.index([t for t, m in zip(row, mask) if m])
             for row, mask in zip(batch["completion_ids"].tolist(), batch["completion_mask"].tolist())]

    def decode(x):
        return tokenizer.decode(x, skip_special_tokens=True)

    verifier = get_verifier("gsm8k_steps")
    steps = []
    for text, token_ids in zip(texts, ids):
        (listed,) = verifier(prompts=["Q"], completions=[text], answer=["#### 17"])
        tokens = step_end_tokens(decode, token_ids, text, [o for o, _ in listed])
        steps.append([(t, r) for t, (_, r) in zip(tokens, listed)])
    expected = oracle_process_advantages(steps, 4, "population")
    for row, k in enumerate(order):
        got = batch["advantages"][row, : len(expected[k])]
        torch.testing.assert_close(got, torch.tensor(expected[k], dtype=got.dtype), rtol=0, atol=1e-6)
    first_line = {k: batch["advantages"][order.index(k), 0].item() for k in range(4)}
    assert first_line[0] > first_line[3] > first_line[1]  # right work and answer > right work > wrong work
