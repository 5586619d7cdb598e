"""``brainmaps preprocess SOURCE --out DIR``: register raw T1 scans to MNI space."""

from __future__ import annotations

import argparse

from brainmaps.cli._args import add_progress_flag, argument_type
from brainmaps.data.pipeline import output_grid, preprocess_cohort
from brainmaps.validation import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "preprocess",
        help="bias-correct and register raw T1 scans to the MNI152 template, with QC",
        description="N4 bias correction, affine registration to the MNI152 template, brain "
        "masking and QC for every scan of a BIDS folder or table. Writes a BIDS-like dataset "
        "to --out (participants.tsv, registered images, transforms, qc.tsv, qc_mosaic.png) "
        "that 'brainmaps train DIR --target ...' reads. Scans already done are skipped.",
    )
    p.add_argument("source", help="BIDS folder (participants.tsv) or table of subjects and paths")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-jobs", type=int, default=1, help="scans in parallel (-1: all cores)")
    p.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="leave scans flagged by QC out of participants.tsv",
    )
    p.add_argument(
        "--grid",
        type=argument_type(output_grid),
        default="2mm",
        help="output grid: voxel size (2mm) or shape (91x109x91)",
    )
    p.add_argument("--suffix", default="T1w", help="BIDS image suffix (default T1w)")
    p.add_argument("--subject-col", help="subject column of a table")
    p.add_argument("--path-col", help="image path column of a table")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps preprocess``."""
    check_output_dir(args.out, "--out")
    qc = preprocess_cohort(
        args.source,
        args.out,
        grid=args.grid,
        n_jobs=args.n_jobs,
        exclude_flagged=args.exclude_flagged,
        suffix=args.suffix,
        subject_col=args.subject_col,
        path_col=args.path_col,
        progress=not args.no_progress,
    )
    ok = qc["status"] == "ok"
    corr = qc.loc[ok, "correlation"]
    print(
        f"{int(ok.sum())} of {len(qc)} scans registered to {args.out} "
        f"({int((~ok).sum())} failed, {int(qc['flagged'].sum())} flagged; QC correlation "
        f"{corr.min():.3f}-{corr.max():.3f}); see {args.out}/qc.tsv and qc_mosaic.png"
    )
    return 0
