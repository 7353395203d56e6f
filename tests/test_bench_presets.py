"""Prompt presets: the DeepSeekMath protocol byte for byte, lm-eval's layouts, per-model entries, registration."""

import hashlib
import json

import pytest

from trl_grpo_plus.benchmarks.datasets import BenchmarkDataError, load_examples
from trl_grpo_plus.benchmarks.presets import (BOXED_INSTRUCTION, Layout, Preset, asset_path, get_preset, list_presets,
                                              register_preset)
from trl_grpo_plus.benchmarks.prompts import build_preset, build_prompts, truncate_at_stop

from test_bench_data import GSM8K_ROWS, HENDRYCKS_ROW  # our own toy rows (tests/ is on sys.path)

SHIPPED_SHA256 = {  # from ../shared/data/prompts/README.md
    "gsm8k_cot_8shot.jsonl": "3d01cf15b28754fc61d042980b85acad458d1ddc140f65f946491eb42bf5b4d5",
    "minerva_math_4shot.jsonl": "678cc1fd6aad3b885a0755d78aa324e099e78881fc454c54db0c5056ce6d8ac2",
}


def _rows(name):
    with open(asset_path(name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("name", sorted(SHIPPED_SHA256))
def test_shipped_exemplars_are_the_attributed_files(name, shared_data):
    data = open(asset_path(name), "rb").read()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_SHA256[name]
    assert data == (shared_data / "prompts" / name).read_bytes()


def test_deepseek_gsm8k_prompt_joins_with_three_newlines():
    b = build_prompts("gsm8k", "deepseek-fewshot")
    rows = _rows("gsm8k_cot_8shot.jsonl")
    text = b.render("How many legs do 2 cats have?")
    # DeepSeekMath: "Q: {q}\nA: {a}" blocks joined by "\n\n\n", then "\n\n\nQ: {test}\nA:"
    expected = "\n\n\n".join(f"Q: {r['question']}\nA: {r['answer']}" for r in rows) + "\n\n\nQ: How many legs do 2 cats have?\nA:"
    assert text == expected
    assert text.startswith("Q: There are 15 trees in the grove.") and text.count("\n\n\nQ: ") == 8
    assert "\n\n\n\n" not in text and b.num_fewshot == 8
    assert b.stop == ("\nQ:",) and b.max_new_tokens == 1024 and b.layout.bos == "auto"
    d = b.describe()
    assert d["exemplar_file_sha256"] == SHIPPED_SHA256["gsm8k_cot_8shot.jsonl"]
    assert d["exemplars_sha256"] == hashlib.sha256(b.prefix.encode()).hexdigest()


def test_deepseek_minerva_prompt():
    b = build_prompts("math500", "deepseek-fewshot")
    rows = _rows("minerva_math_4shot.jsonl")
    text = b.render("Find $x$.")
    expected = "\n\n".join(f"Problem:\n{r['problem']}\n\nSolution:\n{r['solution']}" for r in rows) + "\n\nProblem:\nFind $x$.\n\nSolution:"
    assert text == expected
    assert text.count("Problem:\n") == 5 and "$.}" in text  # the source's stray brace is kept
    assert b.stop == ("\nProblem:",) and b.max_new_tokens == 1024
    # the completion is cut before the next problem and keeps its final-answer sentence
    out = truncate_at_stop("x = 2.\nFinal Answer: The final answer is $2$. I hope it is correct.\nProblem: more", b.stop)
    assert out == "x = 2.\nFinal Answer: The final answer is $2$. I hope it is correct."


def test_lm_eval_layouts():
    g = build_prompts("gsm8k", "lm-eval-gsm8k-cot")
    text = g.render("Q1?")
    assert text.count("\n\nQ: ") == 8 and "\n\n\n" not in text and text.endswith("\n\nQ: Q1?\nA:")
    assert g.stop == ("Q:", "</s>", "<|im_end|>") and g.max_new_tokens == 256
    m = build_prompts("math", "lm-eval-minerva")
    text = m.render("P?")
    assert text.startswith("Problem:\nFind the domain") and "\n\nSolution: The expressions" in text  # "Solution: " + solution
    assert text.endswith("I hope it is correct.\n\nProblem:\nP?\n\nSolution:") and m.stop == ("Problem:",)
    with pytest.raises(BenchmarkDataError, match="no layout for 'math500'.*gsm8k"):
        build_prompts("math500", "lm-eval-gsm8k-cot")


def test_deepseek_chat_is_plain_text():
    b = build_prompts("gsm8k", "deepseek-chat")
    assert b.render("What is 2+2?") == f"User: What is 2+2?\n{BOXED_INSTRUCTION}\n\nAssistant:"
    assert b.num_fewshot == 0 and b.stop == () and b.max_new_tokens == 1024
    assert BOXED_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."


def test_chat_and_per_model_entries_use_the_chat_template():
    from trl_grpo_plus.tiny import build_tokenizer

    tok = build_tokenizer()
    chat = build_prompts("math500", "chat")
    assert chat.render("What is 2+2?", tok) == f"<|im_start|>user\nWhat is 2+2?\n{BOXED_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompts("math500", "deepseek-math").render("Q", tok) == chat.render("Q", tok)
    qwen = build_prompts("gsm8k", "qwen2.5-math").render("What is 2+2?", tok)
    assert qwen == (f"<|im_start|>system\n{BOXED_INSTRUCTION}<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    tok.chat_template = None
    with pytest.raises(BenchmarkDataError, match="chat template"):
        chat.render("x", tok)
    with pytest.raises(BenchmarkDataError, match="takes no few-shot exemplars"):
        build_prompts("gsm8k", "chat", num_fewshot=2)


def test_user_exemplar_files_in_the_benchmark_format(tmp_path):
    f = tmp_path / "shots.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    b = build_prompts("gsm8k", "fewshot", fewshot_file=str(f))  # the old name is an alias
    assert b.name == "deepseek-fewshot" and b.exemplar_file == str(f)
    assert b.render("How many legs do 2 cats have?") == (
        "Q: Ann has 3 pens and buys 4 more. How many pens?\nA: 3 + 4 = 7 pens. The answer is 7.\n\n\n"
        "Q: A box holds 1,200 nails; 200 are used. How many remain?\n"
        "A: 1,200 - 200 = 1,000 So 1,000 remain. The answer is 1000.\n\n\n"
        "Q: How many legs do 2 cats have?\nA:")
    assert build_prompts("gsm8k", "deepseek-fewshot", fewshot_file=str(f), num_fewshot=1).num_fewshot == 1
    with pytest.raises(BenchmarkDataError, match="num_fewshot=3.*number 2"):
        build_prompts("gsm8k", "deepseek-fewshot", fewshot_file=str(f), num_fewshot=3)
    # a raw MATH row gets Minerva's closing line; Example objects work too
    m = build_preset("math", "deepseek-fewshot", load_examples("math", rows=[HENDRYCKS_ROW]))
    assert m.render("Find $x$.") == (
        "Problem:\nCompute $\\frac{2}{4}$.\n\nSolution:\nWe have $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.\n"
        "Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.\n\n"
        "Problem:\nFind $x$.\n\nSolution:")
    assert build_prompts("gsm8k", "deepseek-fewshot", num_fewshot=0).render("Q?") == "Q: Q?\nA:"


def test_register_a_preset():
    mine = Preset(name="test-mine", layouts={"gsm8k": Layout(query="Question: {question}\nAnswer (use \\boxed{}):",
                                                             stop=("\n\n",), max_new_tokens=64)})
    register_preset(mine)
    try:
        assert "test-mine" in list_presets() and get_preset("test-mine") is mine
        b = build_prompts("gsm8k", "test-mine")
        assert b.render("1+1?") == "Question: 1+1?\nAnswer (use \\boxed{}):"  # literal braces stay
        assert b.max_new_tokens == 64 and b.stop == ("\n\n",)
        with pytest.raises(ValueError, match="already registered"):
            register_preset(mine)
        register_preset(Preset(name="test-mine", layouts={"gsm8k": Layout()}), overwrite=True)
        assert get_preset("test-mine").layouts["gsm8k"].max_new_tokens == 1024
    finally:
        from trl_grpo_plus.benchmarks import presets

        presets._PRESETS.pop("test-mine", None)
    with pytest.raises(ValueError, match="already registered"):
        register_preset(Preset(name="deepseek-chat", layouts={"gsm8k": Layout()}))
    with pytest.raises(ValueError, match="unknown family 'aime'"):
        register_preset(Preset(name="test-aime", layouts={"aime": Layout()}))
    with pytest.raises(ValueError, match="no '\\{question\\}'"):
        Layout(query="no placeholder")
    with pytest.raises(BenchmarkDataError, match="Unknown prompt preset 'zero'.*deepseek-fewshot"):
        build_prompts("gsm8k", "zero")
