"""``brainmaps roar RUN``: remove and retrain (ROAR) / keep and retrain (KAR) of the maps."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.roar import FILLS
from brainmaps.cli._args import (
    add_folds_subset_flag,
    add_progress_flag,
    folds_subset,
    parse_numbers,
)
from brainmaps.cli.faithfulness import split_methods
from brainmaps.exceptions import ConfigError
from brainmaps.run.layout import RunLayout
from brainmaps.steps.roar import DEFAULT_FRACTIONS, RANKINGS, SIGMA_MM, roar_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "roar",
        help="remove and retrain (ROAR) / keep and retrain (KAR): accuracy of models "
        "retrained without each map's top voxels, against random removal (slow)",
        description="For each method and fraction, replace that share of every volume's "
        "brain voxels, ranked by the volume's own out-of-fold map, by the per-voxel mean "
        "of the fold's training volumes: the top of the ranking (ROAR) or its bottom "
        "(KAR). Retrain each chosen fold's model from scratch with the run's configuration "
        "on the modified training volumes and score it on the modified test volumes; a "
        "seeded random ranking is the control and the unmodified retrain (fraction 0) the "
        "reference (Hooker et al. 2019). Each model is recorded as it finishes, so an "
        "interrupted call resumes. One model per method, mode, fraction and fold: bound "
        "the cost with --folds-subset, --epochs and --fractions. Writes "
        "RUN/analysis/roar.tsv, kar.tsv and roar_folds.tsv; the two summaries hold only "
        "the models of this call's options, fractions and current maps, each paired by "
        "fold with the random ranking and the unmodified retrain.",
    )
    p.add_argument("run_dir", help="run folder with maps of every subject")
    p.add_argument("--methods", help="comma-separated map folders (default: all with maps)")
    default = ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)
    p.add_argument(
        "--fractions", default=default,
        help=f"shares of the brain voxels replaced, in (0, 1) ({default}); 0 is always added",
    )  # fmt: skip
    add_folds_subset_flag(p)
    p.add_argument("--epochs", type=int, help="epochs of every retrained model (the run's)")
    p.add_argument("--mode", default="both", choices=("both", "roar", "kar"), help="(both)")
    p.add_argument(
        "--fill", default="train_mean", choices=FILLS,
        help="what replaced voxels become (train_mean: the fold's per-voxel training mean)",
    )  # fmt: skip
    p.add_argument(
        "--ranking", default="subject", choices=RANKINGS,
        help="subject: each volume by its own map (Hooker et al.); fold_mean: every volume "
        "by the fold's mean map (the same voxels for every subject)",
    )  # fmt: skip
    sign = p.add_mutually_exclusive_group()
    sign.add_argument(
        "--absolute", dest="absolute", action="store_true", default=False,
        help="rank voxels by |map| (for maps whose negative values also matter)",
    )  # fmt: skip
    sign.add_argument(
        "--signed", dest="absolute", action="store_false",
        help="rank voxels by signed value, highest first (the default)",
    )  # fmt: skip
    p.add_argument(
        "--sigma-mm", type=float,
        help=f"blur of the blur fill in mm ({SIGMA_MM:g}); only with --fill blur",
    )  # fmt: skip
    p.add_argument(
        "--random-sigma-mm", type=float, default=0.0,
        help="smooth the random control's noise by this sigma in mm, so it removes compact "
        "blobs as smooth maps do (0: scattered voxels, Hooker et al.)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random ranking (0)")
    p.add_argument("--overwrite", action="store_true", help="recompute when the options changed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps roar``."""
    if args.sigma_mm is not None and args.fill != "blur":
        raise ConfigError(
            f"--sigma-mm {args.sigma_mm:g} applies to --fill blur only (--fill is "
            f"{args.fill}); add --fill blur, or drop --sigma-mm."
        )
    path = roar_run(
        args.run_dir,
        split_methods(args.methods),
        fractions=parse_numbers(args.fractions, "--fractions", float),
        folds=folds_subset(args),
        epochs=args.epochs,
        mode=args.mode,
        fill=args.fill,
        ranking=args.ranking,
        absolute=args.absolute,
        random_sigma_mm=args.random_sigma_mm,
        sigma_mm=SIGMA_MM if args.sigma_mm is None else args.sigma_mm,
        random_state=args.seed,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.no_progress,
    )
    layout = RunLayout(args.run_dir)
    for mode in ("roar", "kar"):
        table = layout.analysis(mode)
        if table.is_file():
            df = pd.read_csv(table, sep="\t", dtype={"method": str})
            shown = df[["method", "fraction", "accuracy", "accuracy_random", "n_folds"]]
            print(f"{mode.upper()}:")
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"remove-and-retrain table written to {path}")
    return 0
