"""Build a tiny Qwen2 causal LM and a matching byte-level BPE tokenizer entirely offline.

Used by the tests, the speed benchmarks and the demo's warm-up script. The tokenizer reproduces
Qwen2's pre-tokenization pipeline (NFC, Qwen's split regex, byte-level without its own regex) so the
ids survive ``save_pretrained`` -> ``AutoTokenizer.from_pretrained`` (transformers rebuilds a
``Qwen2Tokenizer`` for a folder whose model type is ``qwen2``).
"""

from __future__ import annotations

import os
from typing import Iterable

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split pattern (digits are split one by one).
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

DEFAULT_CORPUS = [
    "Question: What is 12 + 7? <think>12 plus 7 is 19.</think><answer>19</answer>",
    "Solve 3 * 4 - 5. The answer is 7. #### 7",
    "The final answer is \\boxed{\\frac{1}{2}}. Therefore x = 3, y = -2.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\n",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "user assistant system You are a helpful assistant. Answer the question.",
]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024):
    """Train a byte-level BPE on ``corpus`` and wrap it as a transformers fast tokenizer (ChatML)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(corpus) if corpus is not None else DEFAULT_CORPUS
    tok.train_from_iterator(texts * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        padding_side="left",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_model(tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate_size: int = 128, seed: int = 0, dtype=None):
    """A randomly initialised tiny ``Qwen2ForCausalLM`` sized to ``tokenizer``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def save_tiny_model(path: str | os.PathLike, corpus: Iterable[str] | None = None, seed: int = 0, **model_kwargs) -> str:
    """Build and save a tiny model + tokenizer to ``path``; returns the path as a string."""
    tokenizer = build_tokenizer(corpus)
    model = build_model(tokenizer, seed=seed, **model_kwargs)
    path = str(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
