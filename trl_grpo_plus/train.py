"""``trl-grpo-plus train --config cfg.yaml [--field value ...]``: GRPO training, configured the TRL way.

One YAML file names the model, the dataset, the verifiers and every ``GRPOPlusConfig`` field; any
field can be overridden on the command line (``TrlParser`` semantics: CLI beats YAML beats default).
It runs unchanged under ``accelerate launch`` (``accelerate launch -m trl_grpo_plus train --config ...``)
and with vLLM through TRL's own ``use_vllm`` / ``vllm_mode`` fields.

Everything a later step needs is checked before the model loads, each failure a one-line error naming the
field, the value and the fix (exit status 2): the config file and every key in it (unknown keys get a
"did you mean"), the config's own ``__post_init__``, verifier names and options, the output folder
(writable), the model (a local folder with a config, a GGUF file, or a hub id whose config can be fetched),
the dataset and the columns that the prompt template and the verifiers read, and the in-training
evaluation's problems (loaded now, offline or not). Only then is the model loaded.

An error or Ctrl-C during training saves a full checkpoint of the last completed step first, then exits with
one line that gives the command to resume (exit status 1, or 130 for Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import shlex
import string
import sys
import tempfile
import traceback
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

LOCAL_DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class TrainScriptArguments:
    """Dataset, prompt and verifier settings of ``trl-grpo-plus train`` (the trainer's own fields live in
    ``GRPOPlusConfig``, the model's in TRL's ``ModelConfig``)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. 'openai/gsm8k'."})
    dataset_config: str | None = field(
        default=None, metadata={"help": "Hub dataset config, e.g. 'main'. Several configs are concatenated in order: "
                                "a YAML list or 'a,b,c' on the CLI (e.g. the 7 MATH subjects)."})
    dataset_file: str | None = field(
        default=None, metadata={"help": "Local data file (.jsonl/.json/.csv/.parquet); used instead of dataset_name."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    column_mapping: str | None = field(
        default=None,
        metadata={"help": "Rename dataset columns before use: YAML mapping {src: dst} or 'src:dst,src:dst' on the "
                  "CLI. Verifiers read their gold column ('answer' by default) after renaming."},
    )
    prompt_template: str = field(
        default="{prompt}",
        metadata={"help": "Python format string over the dataset's columns giving the user message, e.g. "
                  "'{question}\\nPlease reason step by step, and put your final answer within \\\\boxed{{}}.'"},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message (chat prompts only)."})
    conversational: bool = field(
        default=True,
        metadata={"help": "Build chat prompts ([{role, content}], rendered with the model's chat template). "
                  "False gives plain-text prompts."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N rows."})
    verifiers: str | None = field(
        default=None,
        metadata={"help": "Reward verifiers by registry name. YAML: a list of {name, weight, options}; CLI: "
                  "'math:1.0,format:0.2'. Weights go to TRL's reward_weights."},
    )
    eval_benchmark: str | None = field(
        default=None, metadata={"help": "Run BenchmarkCallback on this benchmark (gsm8k, math, math500)."}
    )
    eval_every_n_steps: int = field(default=100, metadata={"help": "BenchmarkCallback period in optimizer steps."})
    eval_limit: int | None = field(default=100, metadata={"help": "Problems per BenchmarkCallback evaluation."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Token budget per answer of the in-training evaluation (default: the prompt "
                                "preset's own, as in `trl-grpo-plus eval`)."})
    eval_data_file: str | None = field(
        default=None, metadata={"help": "Local JSONL of the eval_benchmark's test problems (same fields as the hub "
                                "dataset); needed offline."})
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "A GGUF checkpoint inside the model_name_or_path folder, e.g. 'model.Q4_1.gguf'. It is "
                  "dequantised (transformers' gguf_file=) into a trainable copy under output_dir/base-model once."},
    )


class ConfigError(ValueError):
    """A configuration mistake found before any model is loaded."""


def parse_mapping(value, what: str) -> dict[str, str]:
    """``{src: dst}`` from a YAML mapping or a 'src:dst,src:dst' string."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = {}
    for item in str(value).split(","):
        src, sep, dst = item.partition(":")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"{what}={value!r}: expected 'src:dst,src:dst' (got item {item!r}).")
        pairs[src.strip()] = dst.strip()
    return pairs


def parse_verifier_specs(value) -> list[dict]:
    """Normalise ``verifiers`` to ``[{"name", "weight", "options"}]``."""
    if value in (None, "", []):
        raise ConfigError("verifiers is empty: name at least one, e.g. `verifiers: [{name: math, weight: 1.0}]` "
                          "in the YAML or `--verifiers math:1.0` on the command line.")
    if isinstance(value, str):
        specs = []
        for item in value.split(","):
            name, _, weight = item.strip().partition(":")
            try:
                specs.append({"name": name.strip(), "weight": float(weight) if weight else 1.0, "options": {}})
            except ValueError:
                raise ConfigError(f"verifiers={value!r}: weight {weight!r} of {name!r} is not a number.") from None
        return specs
    if isinstance(value, dict):
        value = [dict(name=k, **(v or {})) for k, v in value.items()]
    specs = []
    for i, spec in enumerate(value):
        if isinstance(spec, str):
            spec = {"name": spec}
        unknown = set(spec) - {"name", "weight", "options"}
        if "name" not in spec or unknown:
            raise ConfigError(f"verifiers[{i}]={spec!r}: each entry takes the keys name, weight and options"
                              + (f" (unknown: {sorted(unknown)})" if unknown else " (name is missing)") + ".")
        specs.append({"name": spec["name"], "weight": float(spec.get("weight", 1.0)),
                      "options": dict(spec.get("options") or {})})
    return specs


def build_verifiers(specs: list[dict]):
    """Instantiate each verifier from the registry; unknown names raise with the valid list."""
    from .rewards import get_verifier

    funcs = []
    for spec in specs:
        try:
            funcs.append(get_verifier(spec["name"], **spec["options"]))
        except KeyError as exc:
            raise ConfigError(f"verifiers: {exc.args[0]}") from None
        except TypeError as exc:
            raise ConfigError(f"verifiers: bad options {spec['options']!r} for {spec['name']!r}: {exc}") from None
    return funcs


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def required_columns(verifier) -> list[list[str]]:
    """Column alternatives a verifier reads: each inner list is 'any one of these'."""
    if getattr(verifier, "gold_column", None):
        return [[verifier.gold_column]]
    if getattr(verifier, "tests_column", None):
        return [[verifier.tests_column, "test_list", "test"]]
    return []


def load_train_dataset(args: TrainScriptArguments):
    from datasets import load_dataset

    if args.dataset_file:
        ext = os.path.splitext(args.dataset_file)[1].lower()
        if ext not in LOCAL_DATA_FORMATS:
            raise ConfigError(f"dataset_file={args.dataset_file!r}: unsupported extension {ext!r}; "
                              f"use one of {sorted(LOCAL_DATA_FORMATS)}.")
        if not os.path.isfile(args.dataset_file):
            raise ConfigError(f"dataset_file={args.dataset_file!r} does not exist.")
        return load_dataset(LOCAL_DATA_FORMATS[ext], data_files=args.dataset_file, split="train")
    if not args.dataset_name:
        raise ConfigError("No dataset: set dataset_name (a hub id) or dataset_file (a local .jsonl/.json/.csv/.parquet).")
    configs = dataset_configs(args.dataset_config)
    try:
        parts = [load_dataset(args.dataset_name, config, split=args.dataset_train_split) for config in configs]
    except Exception as exc:  # offline, unknown id / config / split
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"dataset_name={args.dataset_name!r} (dataset_config={args.dataset_config!r}, "
                          f"dataset_train_split={args.dataset_train_split!r}) could not be loaded ({type(exc).__name__}: "
                          f"{reason[:300]}). Offline? Pass a local file with dataset_file (same columns).") from None
    if len(parts) == 1:
        return parts[0]
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)


def dataset_configs(value) -> list:
    """``dataset_config`` as a list: None, one name, a YAML list, or 'a,b,c'."""
    if value is None or value == "":
        return [None]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def prepare_dataset(dataset, args: TrainScriptArguments, verifiers):
    """Rename columns, check every needed column exists, and build the ``prompt`` column."""
    mapping = parse_mapping(args.column_mapping, "column_mapping")
    missing = [src for src in mapping if src not in dataset.column_names]
    if missing:
        raise ConfigError(f"column_mapping: columns {missing} are not in the dataset (columns: {dataset.column_names}).")
    if mapping:
        dataset = dataset.rename_columns(mapping)
    columns = set(dataset.column_names)
    needed = template_fields(args.prompt_template)
    absent = [c for c in needed if c not in columns]
    if absent:
        raise ConfigError(f"prompt_template={args.prompt_template!r} uses columns {absent} that the dataset lacks "
                          f"(columns: {sorted(columns)}). Fix prompt_template or add a column_mapping.")
    for verifier in verifiers:
        for alternatives in required_columns(verifier):
            if not columns & set(alternatives):
                raise ConfigError(f"verifier {verifier.__name__!r} reads column {alternatives[0]!r}, which the dataset "
                                  f"lacks (columns: {sorted(columns)}). Add column_mapping {{your_column: "
                                  f"{alternatives[0]}}} or set the verifier's option.")
    if args.max_train_samples:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))

    def to_prompt(row):
        text = args.prompt_template.format(**row)
        if not args.conversational:
            return {"prompt": text}
        messages = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
        return {"prompt": messages + [{"role": "user", "content": text}]}

    # a `prompt` column already in the data is replaced by the rendered one
    return dataset.map(to_prompt, remove_columns=["prompt"] if "prompt" in columns else None)


PROG = "trl-grpo-plus train"


def make_parser():
    from trl import ModelConfig, TrlParser

    from .config import GRPOPlusConfig

    class Parser(TrlParser):
        def error(self, message):  # argparse would print a 1400-line usage and exit
            raise ConfigError(_explain_argparse_error(message, self))

    return Parser((TrainScriptArguments, GRPOPlusConfig, ModelConfig), prog=PROG, allow_abbrev=False)


def field_names(parser) -> list[str]:
    """Every settable field of the three dataclasses (what a YAML key or a ``--flag`` may name)."""
    return sorted({a.dest for a in parser._actions if a.dest not in ("help",)})


def did_you_mean(name: str, known, prefix: str = "") -> str:
    """`` Did you mean 'beta'?`` (difflib over ``known``, each shown as ``prefix + name``), or ''."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(prefix + c) for c in close) + "?"


def _explain_argparse_error(message: str, parser) -> str:
    # "argument --beta: invalid float value: 'x'" is already clear; "unrecognized arguments" is handled in parse()
    return f"{message} (`{PROG} --help` lists the options)."


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a value: the path of a YAML file, e.g. --config examples/gsm8k_grpo.yaml.")
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def read_config(path: str, known: list[str]) -> dict:
    """The YAML mapping of ``path``, after checking it exists, parses, and names only known fields."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config={path!r}: no such file (looked in {os.getcwd()}). Pass the path of a YAML file, "
                          "e.g. --config examples/gsm8k_grpo.yaml.")
    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config={path!r} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from None
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ConfigError(f"config={path!r} must hold a YAML mapping of field: value, not a {type(config).__name__}.")
    unknown = [k for k in config if k not in known and k != "env"]
    if unknown:
        raise ConfigError("; ".join(f"config={path!r}: unknown field {k!r}.{did_you_mean(str(k), known)}" for k in unknown)
                          + f" `{PROG} --help` lists this project's fields, `--help-all` every TRL one.")
    return config


def parse(argv: list[str]):
    """Parse YAML + CLI into (script_args, training_args, model_args); verifier lists stay structured.

    Every mistake raises ConfigError with the field, the value and the fix.
    """
    parser = make_parser()
    known = field_names(parser)
    path = _config_path(argv)
    config = read_config(path, known) if path is not None else {}
    # unknown flags first: building the dataclasses runs __post_init__, whose errors would hide a typo
    options = {s for action in parser._actions for s in action.option_strings} | {"--config"}
    unknown = [f for f in (a.split("=", 1)[0] for a in argv if a.startswith("--")) if f not in options]
    if unknown:
        raise ConfigError("; ".join(f"unknown option {flag!r}.{did_you_mean(flag[2:], known, prefix='--')}"
                                    for flag in unknown) + f" `{PROG} --help` lists this project's fields.")
    try:
        *parsed, remaining = parser.parse_args_and_config(args=argv, return_remaining_strings=True)
    except ValueError as exc:
        raise ConfigError(_explain_value_error(str(exc), config, argv)) from exc
    if remaining:
        flags = [r.split("=", 1)[0] for r in remaining if r.startswith("-")]
        if not flags:
            raise ConfigError(f"unexpected argument(s) {remaining}: options take the form --field value.")
        raise ConfigError("; ".join(f"unknown option {flag!r}.{did_you_mean(flag.lstrip('-'), known, prefix='--')}"
                                    for flag in flags) + f" `{PROG} --help` lists this project's fields.")
    return tuple(parsed)


def _explain_value_error(text: str, config: dict, argv: list[str]) -> str:
    """TRL / our config's ``__post_init__`` message, corrected where the CLI knows more (an explicit bf16)."""
    explicit_bf16 = "bf16" in config or any(a == "--bf16" or a.startswith("--bf16=") for a in argv)
    if "bf16" in text and explicit_bf16 and "bf16=None" in text:
        first = text.splitlines()[0]
        where = "on the command line" if any(a.startswith("--bf16") for a in argv) else "in the YAML"
        return (f"{first}\nbf16 is set to true {where}, and no bf16-capable accelerator was found. On CPU, set "
                "`bf16: false` / --bf16 false (full fp32) or `use_cpu: true` / --use_cpu true (bf16 autocast on CPU).")
    return text


def help_text() -> str:
    """``train --help``: --config and this project's own fields first, then a pointer to TRL's."""
    from .config import PLUS_FIELDS, GRPOPlusConfig

    def describe(cls, names):
        rows = []
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            f = fields[name]
            default = f.default if f.default is not dataclasses.MISSING else None
            rows.append(f"  --{name} (default: {default!r})\n      {f.metadata.get('help', '')}")
        return rows

    lines = [f"usage: {PROG} --config cfg.yaml [--field value ...]", "",
             "Train with GRPOPlusTrainer from a YAML file; any field can also be given (or overridden) on the command "
             "line: command line > YAML > default. Examples: examples/*.yaml; docs: docs/training.md.", "",
             "  --config FILE\n      YAML file of field: value pairs (any field below or of TRL's GRPOConfig / "
             "ModelConfig), plus an optional `env:` mapping of environment variables.", "",
             "data, prompts, verifiers, in-training evaluation, GGUF (trl_grpo_plus.train.TrainScriptArguments):"]
    lines += describe(TrainScriptArguments, [f.name for f in dataclasses.fields(TrainScriptArguments)])
    lines += ["", "the GRPO objective (GRPOPlusConfig's own fields; formulas in docs/trainer.md):"]
    lines += describe(GRPOPlusConfig, PLUS_FIELDS)
    lines += ["", "the model (TRL ModelConfig): --model_name_or_path ID_OR_FOLDER, --dtype {auto,bfloat16,float16,float32}, "
              "--use_peft, --lora_r, ...",
              "",
              "Every other field of trl.GRPOConfig / transformers.TrainingArguments is accepted too (--beta, "
              "--num_generations, --learning_rate, --per_device_train_batch_size, --max_completion_length, --use_vllm, "
              "--output_dir, --resume_from_checkpoint, ...): `trl-grpo-plus train --help-all` lists all of them, "
              "or see https://huggingface.co/docs/trl/grpo_trainer."]
    return "\n".join(lines)


def check_output_dir(output_dir: str) -> None:
    """The output folder exists (created if needed) and a file can be written in it."""
    if not output_dir:
        raise ConfigError("output_dir is not set: name a folder for checkpoints and the trained model.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"output_dir={output_dir!r} is a file, not a folder. Choose another --output_dir.")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir={output_dir!r} is not writable ({exc.strerror or exc}). Choose a folder you "
                          "can write to with --output_dir.") from None


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")  # 'name' or 'org/name'


def _looks_like_path(name: str) -> bool:
    return not HUB_ID.match(name) or name.endswith((".gguf", ".safetensors", ".bin", ".json"))


def resolve_model_source(model_args, script_args, training_args) -> str:
    """The path or hub id TRL will load, after checking it can be loaded; converts a GGUF file once.

    Order: a ``gguf_file`` (checked, then copied into ``output_dir/base-model``); a local folder (it must hold a
    ``config.json``; a folder of GGUF files asks for ``gguf_file``); else a hub id, whose ``config.json`` is
    fetched now (offline: found in the local cache or an error that says so).
    """
    name = model_args.model_name_or_path
    if not name:
        raise ConfigError("model_name_or_path is not set: name a local model folder or a hub model id, e.g. "
                          "--model_name_or_path Qwen/Qwen2.5-0.5B-Instruct.")
    name = os.path.expanduser(name)
    if script_args.gguf_file:
        from . import gguf

        try:
            gguf.check_gguf_file(name, script_args.gguf_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return name  # converted by load_gguf_model once the cheap checks have all passed
    if os.path.isfile(name) and name.endswith(".gguf"):
        folder, file = os.path.split(os.path.abspath(name))
        raise ConfigError(f"model_name_or_path={name!r} is a GGUF file. Pass its folder and the file name: "
                          f"--model_name_or_path {folder} --gguf_file {file}.")
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "config.json")):
            return name
        from .gguf import gguf_files

        found = gguf_files(name)
        if found:
            raise ConfigError(f"model_name_or_path={name!r} holds GGUF files ({', '.join(found)}) but no config.json. "
                              f"Add --gguf_file {found[0]} (YAML: `gguf_file: {found[0]}`) to train from it.")
        raise ConfigError(f"model_name_or_path={name!r} is a folder without a config.json: not a transformers model. "
                          "Pass the folder that save_pretrained() wrote, or a hub model id.")
    if _looks_like_path(name) or os.path.exists(name):
        raise ConfigError(f"model_name_or_path={name!r}: no such folder. Pass an existing local model folder, or a hub "
                          "model id such as Qwen/Qwen2.5-0.5B-Instruct.")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name, revision=model_args.model_revision,
                                   trust_remote_code=training_args.trust_remote_code)
    except Exception as exc:  # OSError (offline, unknown repo), ValueError (unknown model type), ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model_name_or_path={name!r}: not a local folder, and its config could not be loaded from "
                          f"the Hugging Face Hub ({type(exc).__name__}: {reason[:300]}). Check the id, or download "
                          "the model once (e.g. `hf download ID --local-dir DIR`) and pass the folder.") from None
    return name


def load_eval_problems(callback, script_args) -> None:
    """Load the in-training evaluation's problems now, so a missing file or an offline hub fails before training."""
    from .benchmarks.datasets import BenchmarkDataError

    try:
        callback.load_problems()
    except BenchmarkDataError as exc:
        text = str(exc).replace("--data-file", "eval_data_file").replace("--limit", "eval_limit")
        source = f"eval_data_file={script_args.eval_data_file!r}" if script_args.eval_data_file else \
            f"eval_benchmark={script_args.eval_benchmark!r} (no eval_data_file: from the hub)"
        raise ConfigError(f"{source}: {text} Or drop eval_benchmark to train without the in-training evaluation.") \
            from None


def build_trainer(script_args, training_args, model_args, *, model=None, processing_class=None):
    """Everything from parsed arguments to a ready ``GRPOPlusTrainer``: every check first, the model loaded last."""
    from trl import get_peft_config

    from .callbacks import use_compact_progress
    from .trainer import GRPOPlusTrainer

    specs = parse_verifier_specs(script_args.verifiers)
    verifiers = build_verifiers(specs)
    if training_args.reward_weights is None:
        training_args.reward_weights = [s["weight"] for s in specs]
    elif len(training_args.reward_weights) != len(specs):
        raise ConfigError(f"reward_weights has {len(training_args.reward_weights)} values for {len(specs)} verifiers; "
                          "give weights inside `verifiers` and drop reward_weights.")
    check_output_dir(training_args.output_dir)
    source = resolve_model_source(model_args, script_args, training_args) if model is None else None
    dataset = prepare_dataset(load_train_dataset(script_args), script_args, verifiers)

    callbacks = []
    if script_args.eval_benchmark:
        from .callbacks import BenchmarkCallback

        try:
            callback = BenchmarkCallback(benchmark=script_args.eval_benchmark,
                                         every_n_steps=script_args.eval_every_n_steps,
                                         limit=script_args.eval_limit, data_file=script_args.eval_data_file,
                                         **({"max_new_tokens": script_args.eval_max_new_tokens}
                                            if script_args.eval_max_new_tokens else {}))
        except ValueError as exc:  # unknown benchmark, every_n_steps < 1
            raise ConfigError(f"eval_benchmark / eval_every_n_steps: {exc}") from None
        load_eval_problems(callback, script_args)
        callbacks.append(callback)
    if model is None:
        if script_args.gguf_file:
            from .gguf import trainable_copy

            target = os.path.join(training_args.output_dir, "base-model")
            print(f"{PROG}: dequantising {script_args.gguf_file} into a trainable copy at {target} ...", flush=True)
            source = _on_main_process_first(lambda: trainable_copy(source, script_args.gguf_file, target))
        init_kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
                           attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
        training_args.model_init_kwargs = {**init_kwargs, **(training_args.model_init_kwargs or {})}
        model = source
    trainer = GRPOPlusTrainer(
        model=model,
        reward_funcs=verifiers,
        args=training_args,
        train_dataset=dataset,
        processing_class=processing_class,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks or None,
    )
    use_compact_progress(trainer)
    return trainer  # GRPOPlusTrainer binds the BenchmarkCallback to itself


def _on_main_process_first(make):
    """Run ``make()`` on the main process first, then on the others (which then find its result on disk)."""
    from accelerate import PartialState

    with PartialState().main_process_first():
        return make()


def resume_command(argv: list[str], checkpoint: str) -> str:
    """The command line that resumes this run from ``checkpoint`` (any earlier --resume_from_checkpoint dropped)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume_from_checkpoint":
            skip = True
            continue
        if arg.startswith("--resume_from_checkpoint="):
            continue
        kept.append(arg)
    return shlex.join(["trl-grpo-plus", "train", *kept, "--resume_from_checkpoint", checkpoint])


def run_training(trainer, training_args, argv: list[str]) -> int:
    """Train; on an error or Ctrl-C save a checkpoint of the last completed step, then say how to resume."""
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    except (Exception, KeyboardInterrupt) as exc:
        from .callbacks import CompactProgressCallback

        interrupted = isinstance(exc, KeyboardInterrupt)
        main = trainer.accelerator.is_main_process
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, CompactProgressCallback):
                callback.close_bar()  # so that the resume line below is the last one printed
        what = "interrupted (Ctrl-C)" if interrupted else f"stopped by {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log = os.path.join(training_args.output_dir, "train_error.log")
        if not interrupted and main:
            with open(log, "w") as fh:
                fh.write("".join(traceback.format_exception(exc)))
        step = trainer.state.global_step
        if step == 0:
            checkpoint = None
        else:
            try:
                checkpoint = trainer.save_checkpoint()
            except Exception as save_exc:  # the run is already failing: report both, keep the original
                checkpoint = None
                what += f"; saving a checkpoint failed too ({type(save_exc).__name__}: {save_exc})"
        if main:
            where = "" if interrupted else f" (traceback: {log})"
            if checkpoint:
                print(f"{PROG}: {what} at step {step}{where}. Checkpoint saved: {checkpoint}. Resume with: "
                      f"{resume_command(argv, checkpoint)}", file=sys.stderr, flush=True)
            else:
                print(f"{PROG}: {what} at step {step}{where}. No step had completed, so there is nothing to "
                      "resume: rerun the same command.", file=sys.stderr, flush=True)
        return 130 if interrupted else 1
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(f"usage: {PROG} --config cfg.yaml [--field value ...]   (see examples/*.yaml; --help for the fields)",
              file=sys.stderr)
        return 2
    if "--help-all" in argv:
        make_parser().print_help()
        return 0
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    try:
        script_args, training_args, model_args = parse(argv)
        trainer = build_trainer(script_args, training_args, model_args)
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_training(trainer, training_args, argv)


if __name__ == "__main__":  # through the dispatcher, which also closes the process group
    from trl_grpo_plus.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
