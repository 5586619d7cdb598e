"""``brainmaps localise RUN``: how well maps find the planted effect of a synthetic cohort."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.steps.localise import localise
from brainmaps.validation import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "localise",
        help="ROC AUC, relevance mass and pointing game of the maps vs the planted effect",
        description="Score each method's class-mean and per-subject maps against a "
        "ground-truth mask: by default the planted-effect mask of the synthetic cohort the "
        "run was trained on. Writes RUN/analysis/localisation.tsv and localisation_roc.tsv.",
    )
    p.add_argument("run_dir", help="run folder with maps ('brainmaps explain')")
    p.add_argument("--methods", help="comma-separated methods (default: all with maps)")
    p.add_argument("--truth", help="NIfTI mask of the expected effect (any grid)")
    p.add_argument("--tolerance-mm", type=float, default=0.0, help="pointing-game tolerance (mm)")
    p.add_argument("--signed", action="store_true", help="score signed values (default: |map|)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps localise``."""
    methods = parse_list(args.methods, "--methods", example="grad_cam,gradient")
    path = localise(
        args.run_dir,
        methods,
        truth_img=args.truth,
        absolute=not args.signed,
        tolerance_mm=args.tolerance_mm,
    )
    table = pd.read_csv(path, sep="\t")
    print(table.round(3).to_string(index=False))
    print(f"localisation written to {path}")
    return 0
