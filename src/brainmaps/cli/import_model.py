"""``brainmaps import-model FILE --model NAME --out RUN``: a state_dict made elsewhere as a run."""

from __future__ import annotations

import argparse

import yaml

from brainmaps.cli._args import argument_type
from brainmaps.cli.options import add_config_options, config_options, overrides
from brainmaps.data.preprocess import PreprocessConfig, parse_grid
from brainmaps.exceptions import ConfigError
from brainmaps.training.import_model import import_model
from brainmaps.validation import check_output_dir

_grid = argument_type(parse_grid)
#: The preprocessing options, as for ``brainmaps train`` (from PreprocessConfig).
OPTIONS = config_options(
    PreprocessConfig, "preprocess", flags={"grid_shape": "--grid"}, kinds={"grid_shape": _grid}
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "import-model",
        help="turn a state_dict trained elsewhere into a run folder for predict/serve",
        description="Wrap a bare PyTorch state_dict of a registered architecture (matched "
        "by name, else by order and shape) as a run folder with one fold, no cohort and no "
        "predictions, which 'brainmaps predict' and 'brainmaps serve' accept.",
    )
    p.add_argument("file", help="torch.save(model.state_dict(), FILE) (.pt/.pth)")
    p.add_argument("--model", required=True, help="registered architecture, e.g. xin2019")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument(
        "--classes",
        help="class names in output order, comma-separated (F,M: output 1 is M); omit for "
        "a regression model with one output",
    )
    p.add_argument("--target", default="label", help="what the model predicts (e.g. sex)")
    p.add_argument(
        "--options",
        default="{}",
        help="model options as a YAML mapping, e.g. '{channels: [8, 16, 32]}'",
    )
    p.add_argument("--suffix", default="T1w", help="input channel(s), as in train --suffix")
    add_config_options(p, OPTIONS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps import-model``."""
    check_output_dir(args.out, "--out")
    try:
        options = yaml.safe_load(args.options) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--options is not valid YAML: {exc}") from None
    if not isinstance(options, dict):
        raise ConfigError(
            f"--options must be a mapping (e.g. '{{channels: [8, 16]}}'), got {options!r}."
        )
    classes = tuple(c.strip() for c in args.classes.split(",")) if args.classes else None
    preprocess = PreprocessConfig.from_dict(overrides(args, OPTIONS).get("preprocess", {}))
    out = import_model(
        args.file,
        args.out,
        model=args.model,
        preprocess=preprocess,
        classes=classes,
        target=args.target,
        options=options,
        suffix=args.suffix,
    )
    print(f"run folder: {out} (one imported fold; use brainmaps predict {out} SCAN ...)")
    return 0
