"""``brainmaps train SOURCE --target COL --out RUN``: cross-validated training."""

from __future__ import annotations

import argparse

from brainmaps.cli._args import argument_type
from brainmaps.data.preprocess import parse_grid
from brainmaps.evaluation.metrics import format_metrics_table
from brainmaps.exceptions import ConfigError
from brainmaps.run.config import RunConfig, load_config
from brainmaps.training.run import train_run
from brainmaps.validation import check_output_dir

_grid = argument_type(parse_grid)  # keeps parse_grid's explanation in the error

# (flag, config section, key, type, help); every flag defaults to None so that an option
# given on the command line overrides the same key of a --config file, and nothing else.
_OPTIONS = (
    ("--target", "data", "target", str, "label column to predict (e.g. group, sex, age)"),
    ("--subject-col", "data", "subject_col", str, "subject column of a table"),
    ("--path-col", "data", "path_col", str, "image path column of a table"),
    ("--suffix", "data", "suffix", str, "BIDS image suffix (default T1w)"),
    ("--task", "data", "task", str, "auto | classification | regression"),
    ("--grid", "preprocess", "grid_shape", _grid, "model grid XxYxZ (default 58x70x58)"),
    ("--normalization", "preprocess", "normalization", str, "zscore | minmax | none"),
    ("--model", "model", "name", str, "architecture (default xin2019)"),
    ("--folds", "training", "folds", int, "outer CV folds (default 10)"),
    ("--folds-file", "training", "folds_file", str, "TSV with subject and fold columns"),
    ("--epochs", "training", "epochs", int, "training epochs (default 20)"),
    ("--lr", "training", "lr", float, "Adam learning rate (default 3e-4)"),
    ("--batch-size", "training", "batch_size", int, "mini-batch size (default 8)"),
    ("--seed", "training", "seed", int, "random seed (default 42)"),
    ("--val-fraction", "training", "val_fraction", float, "inner validation fraction (0.1)"),
    ("--device", "execution", "device", str, "auto | cpu | cuda"),
    ("--n-jobs", "execution", "n_jobs", int, "parallel preprocessing jobs (default 1)"),
    ("--num-workers", "execution", "num_workers", int, "DataLoader workers (default 0)"),
    ("--cache-dir", "execution", "cache_dir", str, "preprocessed-volume cache folder"),
)


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
    for flag, _, _, kind, text in _OPTIONS:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument(
        "--brain-mask",
        action="store_true",
        default=None,
        help="multiply images by the MNI152 brain mask",
    )
    p.add_argument(
        "--drop-missing",
        action="store_true",
        default=None,
        help="drop subjects with a missing label (with a warning)",
    )
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
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
    for flag, section, key, _, _ in _OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            raw[section][key] = list(value) if isinstance(value, tuple) else value
    if args.brain_mask:
        raw["preprocess"]["brain_mask"] = True
    if args.drop_missing:
        raw["data"]["drop_missing"] = True
    if args.no_amp:
        raw["training"]["amp"] = False
    raw["execution"]["progress"] = not args.no_progress
    for key in ("source", "target"):
        if not raw["data"].get(key):
            hint = "SOURCE argument" if key == "source" else "--target COLUMN"
            raise ConfigError(f"no {key} given; pass the {hint} or a --config file.")
    return RunConfig.from_dict(raw, origin=args.config or "command line")


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps train``."""
    for flag, path in (("--out", args.out), ("--cache-dir", args.cache_dir)):
        if path is not None:
            check_output_dir(path, flag)
    config = config_from_args(args)
    result = train_run(config)
    if result.resumed_folds:
        print(f"resumed: folds {result.resumed_folds} were already trained")
    print(format_metrics_table(result.metrics))
    print(f"run folder: {result.out}")
    return 0
