"""Token parity: for the same preset the hf and vLLM backends are fed the same token ids, with
exactly one BOS where the tokenizer adds one (Llama style) and none where it does not (Qwen style).

Both tokenizers are built here; vLLM is a recording fake (vLLM cannot run on CPU)."""

import pytest
import torch

from trl_grpo_plus.benchmarks import evaluate
from trl_grpo_plus.benchmarks.generation import HFBackend
from trl_grpo_plus.benchmarks.prompts import build_prompts, encode_prompt

CORPUS = ["Q: Tom has 3 apples and gets 4 more. How many now?\nA: 3 + 4 = 7. The answer is 7.",
          "Problem:\nFind $x$ if $2x = 6$.\n\nSolution:\n$x = 3$. Final Answer: The final answer is $3$.",
          "User: What is 2+2?\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:"] * 4
ROWS = [{"question": f"Tom has {i} apples and gets {i + 1} more. How many now?", "answer": f"x\n#### {2 * i + 1}"}
        for i in range(3)]
LLAMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}[assistant] {% endif %}")


@pytest.fixture(scope="module")
def llama():
    """A BPE tokenizer whose post-processor prepends <s> (Llama style), and a tiny Llama on it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = raw.token_to_id("<s>")
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="</s>", padding_side="left")
    tok.chat_template = LLAMA_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, bos_token_id=bos, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


class _Sampling:
    def __init__(self, **kw):
        self.kwargs = kw


class _Out:
    def __init__(self, text):
        self.index, self.text, self.token_ids, self.finish_reason = 0, text, [1], "stop"


class _Req:
    def __init__(self, text):
        self.outputs = [_Out(text)]


class RecordingLLM:
    def __init__(self, tok):
        self.tok, self.prompts = tok, []

    def get_tokenizer(self):
        return self.tok

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.prompts.extend(p["prompt_token_ids"] for p in prompts)
        return [_Req("The answer is 1.") for _ in prompts]


def fed_to_hf(model, tok, preset, monkeypatch):
    """The unpadded token ids ``model.generate`` receives per problem, in dataset order."""
    seen = []
    original = HFBackend.generate_batch

    def recording(self, prompts, params, keys=None, on_finished=None):
        seen.extend(zip(keys, [list(p) for p in prompts]))
        return original(self, prompts, params, keys, on_finished)

    monkeypatch.setattr(HFBackend, "generate_batch", recording)
    calls = []
    real_generate = model.generate

    def spy(input_ids=None, attention_mask=None, **kw):
        calls.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
        return real_generate(input_ids=input_ids, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(model, "generate", spy)
    evaluate("gsm8k", model, tok, rows=ROWS, prompt=preset, max_new_tokens=2, batch_size=2, progress=False)
    monkeypatch.undo()
    by_key = dict(seen)
    assert sorted(map(tuple, calls)) == sorted(tuple(v) for v in by_key.values())  # what generate got, unpadded
    return [by_key[i] for i in range(len(ROWS))]


def fed_to_vllm(model_tok, preset):
    llm = RecordingLLM(model_tok)
    evaluate("gsm8k", "fake/model", model_tok, backend="vllm", vllm_llm=llm, rows=ROWS, prompt=preset, max_new_tokens=2,
             progress=False, vllm_kwargs={"sampling_params_cls": _Sampling})
    return llm.prompts


@pytest.mark.parametrize("preset", ["deepseek-fewshot", "deepseek-chat", "chat"])
def test_llama_style_one_bos_on_both_backends(llama, preset, monkeypatch):
    model, tok = llama
    bos = tok.bos_token_id
    hf = fed_to_hf(model, tok, preset, monkeypatch)
    vl = fed_to_vllm(tok, preset)
    assert hf == vl
    for ids in hf:
        assert ids[0] == bos and ids.count(bos) == 1  # no missing BOS, no double BOS
    builder = build_prompts("gsm8k", preset)
    text = builder.render(ROWS[0]["question"], tok)
    assert text.startswith("<s>") == (preset == "chat")  # the chat template writes the BOS itself
    assert hf[0] == encode_prompt(tok, text)


@pytest.mark.parametrize("preset", ["deepseek-fewshot", "chat"])
def test_qwen_style_no_bos_on_both_backends(qwen, preset, monkeypatch):
    model, tok = qwen
    assert tok.bos_token is None
    hf = fed_to_hf(model, tok, preset, monkeypatch)
    assert hf == fed_to_vllm(tok, preset)
    text = build_prompts("gsm8k", preset).render(ROWS[1]["question"], tok)
    assert hf[1] == tok(text, add_special_tokens=False)["input_ids"]  # nothing added


def test_encode_rule(llama):
    _, tok = llama
    bos = tok.bos_token_id
    assert encode_prompt(tok, "Q: x")[0] == bos
    assert encode_prompt(tok, "<s>Q: x").count(bos) == 1  # the text already starts with BOS
    assert bos not in encode_prompt(tok, "Q: x", bos="never")
