"""``brainmaps morphometry DATA --atlas A --labels T --out F``: regional volumes and means."""

from __future__ import annotations

import argparse

from brainmaps.baselines.morphometry import run_morphometry
from brainmaps.cli._args import add_progress_flag
from brainmaps.validation import check_output_file


def _threshold(text: str) -> float | str:
    if text == "otsu":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'otsu', got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "morphometry",
        help="regional volumes and mean intensities from an atlas (features for baselines)",
        description="For every scan and every atlas region, measure the volume (mm^3) of "
        "the region's tissue and its mean intensity. DATA is a run folder (its "
        "preprocessed volumes are measured on the run grid) or a cohort table / BIDS "
        "folder (its images as they are: every scan, or with --target only the scans "
        "'brainmaps train' would use). The atlas is resampled onto each image through the affines.",
    )
    p.add_argument("data", help="run folder, cohort table (TSV/CSV) or BIDS folder")
    p.add_argument("--atlas", required=True, help="3D label image (NIfTI), 0 = background")
    p.add_argument("--labels", required=True, help="TSV/CSV with index (or label) and name")
    p.add_argument("--out", required=True, help="features TSV to write")
    p.add_argument(
        "--target",
        help="label column of a cohort table / BIDS folder: measure only the scans that "
        "'brainmaps train --target' uses (default: every scan)",
    )
    p.add_argument("--subject-col", help="subject column of a cohort table")
    p.add_argument("--path-col", help="image path column of a cohort table")
    p.add_argument("--suffix", default="T1w", help="BIDS image suffix (default T1w)")
    p.add_argument("--drop-missing", action="store_true", help="drop scans without a label")
    p.add_argument(
        "--segmentation",
        action="store_true",
        help="images are tissue probabilities in [0, 1]: probability-weighted volumes",
    )
    p.add_argument(
        "--threshold",
        type=_threshold,
        help="tissue threshold: a number or 'otsu' (default: otsu for intensities, none "
        "(weighted) for --segmentation)",
    )
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps morphometry``."""
    check_output_file(args.out, "--out")
    table = run_morphometry(
        args.data,
        args.atlas,
        args.labels,
        args.out,
        target=args.target,
        mode="segmentation" if args.segmentation else "intensity",
        threshold=args.threshold,
        progress=not args.no_progress,
        suffix=args.suffix,
        subject_col=args.subject_col,
        path_col=args.path_col,
        drop_missing=args.drop_missing,
    )
    n_regions = (table.shape[1] - 1 - int("session" in table.columns)) // 2
    print(f"{len(table)} scans x {n_regions} regions written to {args.out}")
    return 0
