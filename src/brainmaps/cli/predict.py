"""``brainmaps predict RUN SCAN [SCAN ...]``: apply a run's fold ensemble to new scans.

For a run with several input channels each SCAN is the subject's files joined by commas,
in the run's channel order (``a_gm.nii.gz,a_wm.nii.gz``).
"""

from __future__ import annotations

import argparse
import os

from brainmaps.data.channels import SEPARATOR
from brainmaps.exceptions import ConfigError
from brainmaps.training.ensembles import predict_run
from brainmaps.utils import atomic_path
from brainmaps.validation import check_output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "predict",
        help="predict new scans with the fold models of a run (ensemble mean)",
        description="Preprocess new NIfTI scans as in the run and average the predictions "
        "of its fold models. Writes a TSV of class probabilities (or predicted values).",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument(
        "images",
        nargs="+",
        help="NIfTI files, one per subject; for a run with several input channels, each "
        "subject's files joined by commas in the run's channel order (a_gm.nii.gz,a_wm.nii.gz)",
    )
    p.add_argument("--out", help="TSV to write (default: print to stdout)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=4, help="volumes per forward pass")
    p.add_argument(
        "--threshold",
        help="binary runs: add a call column, the second class when its probability is at "
        "least the threshold: 0.5 | youden | sens=0.9 | spec=0.9 | a value in (0, 1); rules "
        "are chosen on the run's out-of-fold predictions ('brainmaps thresholds')",
    )
    p.add_argument(
        "--targets",
        help="regression runs: the true value of each scan, comma-separated in the order of "
        "the scans (e.g. chronological ages 63,71.5), for the gap and its bias correction",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps predict``."""
    if args.out:
        check_output_file(args.out, "--out")
    images = [_subject(arg) for arg in args.images]
    targets = None
    if args.targets:
        try:
            targets = [float(v) for v in args.targets.split(",")]
        except ValueError:
            raise ConfigError(
                f"--targets {args.targets!r}: give numbers separated by commas, one per scan "
                "(e.g. --targets 63,71.5)."
            ) from None
    table = predict_run(
        args.run_dir,
        images,
        device=args.device,
        batch_size=args.batch_size,
        threshold=args.threshold,
        targets=targets,
    )
    if args.out:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        print(f"predictions written to {args.out}")
    else:
        print(table.to_csv(sep="\t", index=False, float_format="%.4f"), end="")
    return 0


def _subject(arg: str) -> str | tuple[str, ...]:
    """One subject's files: a comma-joined list (unless a file has that very name)."""
    if SEPARATOR in arg and not os.path.exists(arg):
        return tuple(arg.split(SEPARATOR))
    return arg
