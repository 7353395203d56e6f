"""``trl-grpo-plus train --config cfg.yaml [--field value ...]``: GRPO training, configured the TRL way.

One YAML file names the model, the dataset, the verifiers and every ``GRPOPlusConfig`` field; any
field can be overridden on the command line (``TrlParser`` semantics: CLI beats YAML beats default).
It runs unchanged under ``accelerate launch`` (``accelerate launch -m trl_grpo_plus train --config ...``)
and with vLLM through TRL's own ``use_vllm`` / ``vllm_mode`` fields.

Checks that need no model run first: the config's own ``__post_init__``, unknown verifier names,
dataset columns that the prompt template or a verifier needs. Only then is the model loaded.
"""

from __future__ import annotations

import logging
import os
import string
import sys
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

LOCAL_DATA_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class TrainScriptArguments:
    """Dataset, prompt and verifier settings of ``trl-grpo-plus train`` (the trainer's own fields live in
    ``GRPOPlusConfig``, the model's in TRL's ``ModelConfig``)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, e.g. 'openai/gsm8k'."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config, e.g. 'main'."})
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
    eval_data_file: str | None = field(default=None, metadata={"help": "Local JSONL for BenchmarkCallback."})


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
    return load_dataset(args.dataset_name, args.dataset_config, split=args.dataset_train_split)


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


def make_parser():
    from trl import ModelConfig, TrlParser

    from .config import GRPOPlusConfig

    return TrlParser((TrainScriptArguments, GRPOPlusConfig, ModelConfig), prog="trl-grpo-plus train")


def parse(argv: list[str]):
    """Parse YAML + CLI into (script_args, training_args, model_args); verifier lists stay structured."""
    parser = make_parser()
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_trainer(script_args, training_args, model_args, *, model=None, processing_class=None):
    """Everything from parsed arguments to a ready ``GRPOPlusTrainer`` (the model is loaded last)."""
    from trl import get_peft_config

    from .trainer import GRPOPlusTrainer

    specs = parse_verifier_specs(script_args.verifiers)
    verifiers = build_verifiers(specs)
    if training_args.reward_weights is None:
        training_args.reward_weights = [s["weight"] for s in specs]
    elif len(training_args.reward_weights) != len(specs):
        raise ConfigError(f"reward_weights has {len(training_args.reward_weights)} values for {len(specs)} verifiers; "
                          "give weights inside `verifiers` and drop reward_weights.")
    dataset = prepare_dataset(load_train_dataset(script_args), script_args, verifiers)

    callbacks = []
    if script_args.eval_benchmark:
        from .callbacks import BenchmarkCallback

        callbacks.append(BenchmarkCallback(benchmark=script_args.eval_benchmark,
                                           every_n_steps=script_args.eval_every_n_steps,
                                           limit=script_args.eval_limit, data_file=script_args.eval_data_file))
    if model is None:
        if not model_args.model_name_or_path:
            raise ConfigError("model_name_or_path is not set: name a hub model id or a local folder.")
        init_kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code,
                           attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
        training_args.model_init_kwargs = {**init_kwargs, **(training_args.model_init_kwargs or {})}
        model = model_args.model_name_or_path
    trainer = GRPOPlusTrainer(
        model=model,
        reward_funcs=verifiers,
        args=training_args,
        train_dataset=dataset,
        processing_class=processing_class,
        peft_config=get_peft_config(model_args),
        callbacks=callbacks or None,
    )
    return trainer  # GRPOPlusTrainer binds the BenchmarkCallback to itself


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: trl-grpo-plus train --config cfg.yaml [--field value ...]   (see examples/*.yaml)", file=sys.stderr)
        return 2
    try:
        script_args, training_args, model_args = parse(argv)
        trainer = build_trainer(script_args, training_args, model_args)
    except ConfigError as exc:
        print(f"trl-grpo-plus train: configuration error: {exc}", file=sys.stderr)
        return 2
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return 0


if __name__ == "__main__":  # through the dispatcher, which also closes the process group
    from trl_grpo_plus.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
