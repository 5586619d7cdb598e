"""``brainmaps train SOURCE --target COL --out RUN``: cross-validated training."""

from __future__ import annotations

import argparse

import yaml

from brainmaps.cli._args import argument_type
from brainmaps.cli.options import add_config_options, config_options, overrides
from brainmaps.data.preprocess import PreprocessConfig, parse_grid
from brainmaps.evaluation.metrics import format_metrics_table
from brainmaps.exceptions import ConfigError
from brainmaps.run.config import (
    DataConfig,
    ExecutionConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    load_config,
)
from brainmaps.training.run import train_run
from brainmaps.validation import check_output_dir

_grid = argument_type(parse_grid)  # keeps parse_grid's explanation in the error

#: Every option of ``train``, from the config dataclasses (name, type, default, help).
OPTIONS = [
    *config_options(DataConfig, "data", skip=("source",)),
    *config_options(
        PreprocessConfig, "preprocess", flags={"grid_shape": "--grid"}, kinds={"grid_shape": _grid}
    ),
    *config_options(ModelConfig, "model", skip=("options",), flags={"name": "--model"}),
    *config_options(TrainingConfig, "training"),
    *config_options(ExecutionConfig, "execution"),
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "train",
        help="train and cross-validate a 3D CNN on a cohort",
        description="Train and cross-validate a 3D CNN. Writes config.yaml, cohort.tsv, "
        "folds.tsv, fold-<k>/model.pt, predictions.tsv and metrics.tsv to --out. An "
        "interrupted run resumes when the same command is run again.",
    )
    p.add_argument("source", nargs="?", help="cohort table (TSV/CSV) or BIDS folder")
    p.add_argument("--out", help="run folder (default runs/run)")
    p.add_argument("--config", help="a config.yaml to replay; other options override it")
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the architecture, e.g. --model-option width=0.25 --model-option "
        "'blocks=[1,1,1]' for inception_resnet_v2 (repeatable; model.options in config.yaml)",
    )
    add_config_options(p, OPTIONS)
    p.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Merge a --config file (if any) with the options given on the command line."""
    raw = load_config(args.config).to_dict() if args.config else {"data": {}}
    for section in ("data", "preprocess", "model", "training", "execution"):
        raw.setdefault(section, {})
    if args.source is not None:
        raw["data"]["source"] = args.source
    if args.out is not None:
        raw["out"] = args.out
    for section, values in overrides(args, OPTIONS).items():
        raw[section].update(values)
    if args.model_option:
        raw["model"]["options"] = {**(raw["model"].get("options") or {}), **_model_options(args)}
    for key in ("source", "target"):
        if not raw["data"].get(key):
            hint = "SOURCE argument" if key == "source" else "--target COLUMN"
            raise ConfigError(f"no {key} given; pass the {hint} or a --config file.")
    return RunConfig.from_dict(raw, origin=args.config or "command line")


def _model_options(args: argparse.Namespace) -> dict:
    """``--model-option KEY=VALUE`` items as a mapping (values read as YAML)."""
    options = {}
    for item in args.model_option:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--model-option {item!r} is not KEY=VALUE (e.g. --model-option width=0.25)."
            )
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        options[key.strip()] = parsed
    return options


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps train``."""
    for flag, path in (("--out", args.out), ("--cache-dir", args.cfg__execution__cache_dir)):
        if path is not None:
            check_output_dir(path, flag)
    config = config_from_args(args)
    result = train_run(config)
    if result.resumed_folds:
        print(f"resumed: folds {result.resumed_folds} were already trained")
    print(format_metrics_table(result.metrics))
    print(f"run folder: {result.out}")
    return 0
