"""``brainmaps compare RUN``: Dice, Jaccard and rank correlation between methods' maps."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.overlap import pair_matrix
from brainmaps.steps.compare import compare
from brainmaps.validation import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "compare",
        help="Dice / Jaccard / Spearman / Pearson between the methods' class-mean maps",
        description="Compare every pair of methods' class-mean maps (each class and "
        "conjoined) inside the MNI brain mask: Dice and Jaccard of the binarised "
        "foregrounds (background agreement does not count) and Spearman / Pearson "
        "correlation of the values. Writes RUN/analysis/overlap.tsv.",
    )
    p.add_argument("run_dir", help="run folder with maps ('brainmaps explain')")
    p.add_argument("--methods", help="comma-separated methods (default: all with maps)")
    p.add_argument(
        "--threshold",
        default="top10%",
        help="binarisation: 'topK%%' of brain voxels (default top10%%), 'pNN' percentile, "
        "a number, or 'paper' (0.65 min-max for MP and Grad-CAM, 0.04 for guided backprop)",
    )
    p.add_argument(
        "--signed",
        action="store_true",
        help="rank voxels by signed value (default: absolute value)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps compare``."""
    methods = parse_list(args.methods, "--methods", example="grad_cam,gradient")
    path = compare(args.run_dir, methods, threshold=args.threshold, absolute=not args.signed)
    table = pd.read_csv(path, sep="\t")
    first = table[table["map"] == table["map"].iloc[0]]
    print(f"Dice of the {first['map'].iloc[0]} maps ({args.threshold}):")
    print(pair_matrix(table, first["map"].iloc[0]).round(3).to_string())
    print(f"overlap written to {path}")
    return 0
