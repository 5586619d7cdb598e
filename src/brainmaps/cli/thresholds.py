"""``brainmaps thresholds RUN``: operating points of a binary run, chosen without its test folds."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.evaluation.operating_points import METRICS
from brainmaps.steps.thresholds import thresholds


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "thresholds",
        help="thresholds (0.5, Youden, target sensitivity/specificity) with honest metrics",
        description="Choose thresholds on the out-of-fold predictions of a binary run: for "
        "each fold on the other folds only, so the pooled sensitivity, specificity, PPV, NPV "
        "and accuracy (with stratified bootstrap CIs) are not optimistic; the threshold for "
        "new scans is chosen on all of them. Writes RUN/analysis/thresholds.tsv, roc.tsv and "
        "calibration.tsv.",
    )
    p.add_argument("run_dir", help="binary classification run folder ('brainmaps train')")
    p.add_argument("--sensitivity", type=float, default=0.9, help="target of sens=S (0.9)")
    p.add_argument("--specificity", type=float, default=0.9, help="target of spec=S (0.9)")
    p.add_argument("--value", type=float, help="a fixed threshold in (0, 1) to evaluate too")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    p.set_defaults(run=run)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """``metric [low, high]`` strings per rule, for printing."""
    shown = pd.DataFrame({"rule": table["rule"], "threshold": table["threshold"].round(4)})
    for m in METRICS:
        shown[m] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in zip(table[m], table[f"{m}_low"], table[f"{m}_high"], strict=True)
        ]
    shown["fold thresholds"] = [
        f"{m:.3f} ± {s:.3f}"
        for m, s in zip(table["threshold_fold_mean"], table["threshold_fold_std"], strict=True)
    ]
    return shown


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps thresholds``."""
    path = thresholds(
        args.run_dir,
        sensitivity=args.sensitivity,
        specificity=args.specificity,
        value=args.value,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    table = pd.read_csv(path, sep="\t", dtype={"rule": str})
    print(f"positive class: {table['positive'].iloc[0]}; thresholds apply to its probability")
    print(summary(table).to_string(index=False))
    print(f"operating points written to {path}")
    return 0
