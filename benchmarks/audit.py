"""What a run records so that it can be audited and safely resumed.

* ``package_versions()``: the versions of the packages that change results, and the source commit.
* ``model_fingerprint(model, gguf_file)``, computed **before** loading anything heavy:
  - a local folder: ``config.json``'s sha256, and the name, size and mtime of every weight file
    (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.gguf``, ``*.index.json``). New weights
    saved into the same folder change it; hashing multi-GB weights would cost minutes, so the
    weights are identified by size + mtime (a copy with ``cp -p`` keeps both: the same fingerprint);
  - a hub id: the id only (no network here; pin a revision by downloading to a folder);
  - a loaded model object: ``sha256`` over its config and every parameter's bytes.
* ``canonical_model_path(model)``: a local folder as an absolute path without a trailing slash,
  so ``--model D/`` and ``--model D`` are the same run; a hub id unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess

from .presets import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")
VERSIONED = ("trl-grpo-plus", "torch", "transformers", "trl", "accelerate", "datasets", "math-verify", "sympy",
             "tokenizers", "vllm", "gguf")


def package_versions() -> dict[str, str | None]:
    """Versions of ``VERSIONED``, plus ``trl-grpo-plus-git``: the commit of a source checkout (None
    for an installed wheel), with ``+dirty`` when its tracked files have local changes."""
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["trl-grpo-plus-git"] = _source_commit()
    return out


def _source_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def canonical_model_path(model) -> str:
    if not isinstance(model, str):
        return getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    if os.path.isdir(model):
        return os.path.abspath(model)  # abspath drops a trailing slash
    return model.rstrip("/")


def _file_entry(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_fingerprint(model, gguf_file: str | None = None) -> dict:
    """A dict that changes when the model's weights or config change (see the module docstring)."""
    if not isinstance(model, str):
        return {"kind": "object", "sha256": _object_sha256(model)}
    if not os.path.isdir(model):
        return {"kind": "hub", "id": model.rstrip("/")}
    files = {}
    for name in sorted(os.listdir(model)):
        path = os.path.join(model, name)
        if os.path.isfile(path) and (name.endswith(WEIGHT_SUFFIXES) or name == gguf_file):
            files[name] = _file_entry(path)
    cfg = os.path.join(model, "config.json")
    if gguf_file and gguf_file not in files:
        raise FileNotFoundError(f"--gguf-file {gguf_file!r} is not in {model!r}. Pass the folder as --model and the file name as --gguf-file.")
    return {"kind": "folder", "config_sha256": file_sha256(cfg) if os.path.isfile(cfg) else None, "weights": files}


def _object_sha256(model) -> str:
    import torch

    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        h.update(config.to_json_string(use_diff=False).encode())
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = p.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def examples_sha256(examples) -> str:
    """Hash of the selected problems (id, question, gold), in order: what was evaluated."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.question, ex.gold], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
