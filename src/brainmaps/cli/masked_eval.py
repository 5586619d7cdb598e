"""``brainmaps masked-eval RUN``: re-classify test volumes restricted to class-mean masks."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.cli._args import add_progress_flag
from brainmaps.cli.faithfulness import split_methods
from brainmaps.steps.masked_eval import WEIGHTINGS, masked_eval_methods


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "masked-eval",
        help="accuracy of the fold models on inputs multiplied by class-mean map masks",
        description="Multiply every out-of-fold test volume by the class-mean map of each "
        "class and of their sum (conjoined), and by ones (none, the reference), and "
        "classify it again with its fold model (Kan et al. 2020, section 4.3). By default "
        "fold k's masks average only the maps of subjects outside its test set. Writes "
        "RUN/analysis/masked_eval.tsv.",
    )
    p.add_argument("run_dir", help="run folder with maps ('brainmaps explain' first)")
    p.add_argument("--methods", help="comma-separated map folders (default: all with maps)")
    p.add_argument(
        "--weighting",
        default="continuous",
        choices=[*WEIGHTINGS, "both"],
        help="continuous: min-max scaled mean map (the paper, default); binary: thresholded",
    )
    p.add_argument(
        "--threshold",
        default="top10%",
        help="binary weighting: top10%% (default), p95, paper or a number",
    )
    p.add_argument(
        "--pooled-means",
        action="store_true",
        help="use the run's class means over all subjects, as the paper (includes each "
        "fold's test subjects: optimistic)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="volumes per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_progress_flag(p)
    p.set_defaults(run=run)


def _threshold(text: str) -> str | float:
    try:
        return float(text)
    except ValueError:
        return text


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps masked-eval``."""
    path = masked_eval_methods(
        args.run_dir,
        split_methods(args.methods),
        weighting=args.weighting,
        threshold=_threshold(args.threshold),
        fold_means=not args.pooled_means,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    table = pd.read_csv(path, sep="\t", dtype={"fold": str})
    mean = table[table["fold"] == "mean"].set_index(["method", "weighting", "means", "mask"])
    std = table[table["fold"] == "std"].set_index(["method", "weighting", "means", "mask"])
    text = mean["accuracy"].map("{:.3f}".format) + " ± " + std["accuracy"].map("{:.3f}".format)
    print(pd.DataFrame({"accuracy": text}).to_string())
    print(f"masked evaluation written to {path}")
    return 0
