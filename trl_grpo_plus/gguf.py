"""GGUF checkpoints for training: check a ``gguf_file`` early, and copy it into a folder TRL can train.

transformers reads a GGUF file through ``from_pretrained(folder, gguf_file=NAME)`` (the way ``trl-grpo-plus eval
--gguf-file`` loads it), dequantising every tensor. The model it returns can be neither trained nor saved
directly, and TRL builds its reference model again from a path, so training goes through a plain copy: a fresh
model built from the GGUF's config (without its ``quantization_config``), given the dequantised weights and
saved with its tokenizer. ``trl-grpo-plus train --gguf_file`` and ``trl-grpo-plus demo --model SmolLM2`` use it.

Not covered: training the quantised weights themselves (the copy is full precision) and GGUF files that
transformers cannot read (its list of GGUF architectures applies).
"""

from __future__ import annotations

import json
import os

MARKER = "gguf_source.json"  # written into a copy: which file (and which version of it) it came from


def gguf_files(folder: str) -> list[str]:
    """The ``.gguf`` files directly inside ``folder`` (sorted), or [] when it is not a folder."""
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))


def check_gguf_file(folder: str, gguf_file: str) -> str:
    """The path of ``folder/gguf_file`` after checking it is a readable GGUF; ValueError naming the fix otherwise."""
    path = os.path.join(folder, gguf_file)
    if not os.path.isdir(folder):
        raise ValueError(f"gguf_file={gguf_file!r} needs model_name_or_path to be the local folder holding it, "
                         f"but {folder!r} is not a folder.")
    if not os.path.isfile(path):
        found = gguf_files(folder)
        hint = f"GGUF files there: {', '.join(found)}." if found else "There is no .gguf file in that folder."
        raise ValueError(f"gguf_file={gguf_file!r}: no such file in {folder!r}. {hint}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ValueError(f"gguf_file={gguf_file!r}: {path} is not a GGUF file (it starts with {magic!r}, not b'GGUF').")
    return path


def _source_id(path: str) -> dict:
    stat = os.stat(path)
    return {"gguf": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def trainable_copy(folder: str, gguf_file: str, target: str) -> str:
    """Copy ``folder/gguf_file`` into ``target`` as a plain transformers checkpoint (once); returns ``target``.

    A copy already in ``target`` is reused when it came from the same file (path, size and mtime).
    """
    path = check_gguf_file(folder, gguf_file)
    marker = os.path.join(target, MARKER)
    source = _source_id(path)
    if os.path.isfile(marker) and os.path.isfile(os.path.join(target, "config.json")):
        with open(marker) as fh:
            if json.load(fh) == source:
                return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config)  # GGUF-loaded weights cannot be trained or saved directly
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tokenizer.padding_side = "left"
    os.makedirs(target, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    with open(marker, "w") as fh:
        json.dump(source, fh)
    return target
