"""``brainmaps first-layer RUN``: first-layer filter statistics between the two classes."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.group_stats import TESTS
from brainmaps.cli._args import add_progress_flag
from brainmaps.run.layout import RunLayout
from brainmaps.steps.first_layer import STAGES, first_layer_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "first-layer",
        help="compare the first-layer filters' mean activation and entropy between classes",
        description="For every fold model of a two-class run, compute each first-layer "
        "filter's mean activation over the brain and the entropy of its activations for "
        "every subject, and compare the classes filter by filter (Mann-Whitney or t-test, "
        "Benjamini-Hochberg FDR), as in the appendix of Kan et al. (2020). Writes "
        "RUN/analysis/first_layer.tsv and RUN/analysis/first_layer_summary.tsv.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument("--test", choices=TESTS, default="mannwhitney", help="(mannwhitney)")
    p.add_argument("--alpha", type=float, default=0.05, help="FDR level (0.05)")
    p.add_argument(
        "--stage",
        choices=STAGES,
        default="relu",
        help="after the first nonlinearity (relu, default) or the raw convolution (conv)",
    )
    p.add_argument("--bins", type=int, default=256, help="histogram bins of the entropy (256)")
    p.add_argument(
        "--subjects",
        choices=("all", "test"),
        default="all",
        help="subjects through each fold model: all of the run (default) or its test fold",
    )
    p.add_argument("--batch-size", type=int, default=8, help="volumes per forward pass (8)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps first-layer``."""
    out = first_layer_run(
        args.run_dir,
        test=args.test,
        alpha=args.alpha,
        stage=args.stage,
        n_bins=args.bins,
        subjects=args.subjects,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
    )
    summary_path = RunLayout(args.run_dir).analysis("first_layer_summary")
    summary = pd.read_csv(summary_path, sep="\t", dtype=str)
    print(summary.to_string(index=False))
    print(f"first-layer statistics written to {out}")
    return 0
