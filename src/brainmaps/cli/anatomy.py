"""``brainmaps anatomy RUN --builtin harvard_oxford``: region relevance against region volume."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.anatomy import STATISTICS, VALUES
from brainmaps.analysis.builtin_atlases import DEFAULT_ATLAS
from brainmaps.cli._args import atlas_argument
from brainmaps.steps.anatomy import anatomy_run
from brainmaps.validation import parse_list

_SHOWN = ["method", "group", "pair", "n", "r", "p_value", "r_partial", "p_partial", "q_value"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "anatomy",
        help="correlate each subject's relevance in atlas regions with the regions' volumes",
        description="Per subject: the share of its map's relevance (magnitude) inside each "
        "atlas region, counted on the atlas grid; per region pair: Pearson and Spearman "
        "correlation with the region's volume across subjects, the partial correlation "
        "with the run's numeric target (age) held fixed, and Benjamini-Hochberg q-values; "
        "for all subjects and each age group. Volumes come from --volumes (DLMUSE, "
        "FreeSurfer, 'brainmaps morphometry') or are measured on the run's preprocessed "
        "volumes. Writes RUN/analysis/anatomy_<atlas>.tsv and anatomy_<atlas>_subjects.tsv.",
    )
    p.add_argument("run_dir", help="run folder with subject maps ('brainmaps explain')")
    p.add_argument("--atlas", help="label NIfTI of the regions, in the maps' (MNI) space")
    p.add_argument("--labels", help="region table of --atlas (index,name)")
    p.add_argument(
        "--builtin", help=f"a built-in atlas instead of --atlas (default: {DEFAULT_ATLAS})"
    )
    p.add_argument("--methods", help="comma-separated methods (default: all with maps)")
    p.add_argument(
        "--volumes",
        help="TSV/CSV of region volumes with a subject column (default: measured on the run's "
        "volumes over the atlas: tissue above each scan's Otsu threshold)",
    )
    p.add_argument(
        "--pair",
        action="append",
        metavar="NAME=REGIONS:COLUMNS",
        help="regions and volume columns to correlate, '+' joins several, e.g. "
        "ventricles=Left_Lateral_Ventricle+Right_Lateral_Ventricle:MUSE_51+MUSE_52 "
        "(repeatable; default: every region with a <region>_volume column, and "
        "'ventricles')",
    )
    p.add_argument("--statistic", default="fraction", choices=STATISTICS,
                   help="a region's relevance: share of the subject's total (default), "
                   "sum, or mean")  # fmt: skip
    p.add_argument("--values", default="absolute", choices=VALUES,
                   help="which part of signed maps counts: magnitude (default), positive "
                   "or signed values")  # fmt: skip
    p.add_argument(
        "--groups",
        default="47,60",
        help="regression: young/old cutoffs 'YOUNG,OLD' (default 47,60) or 'none'",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps anatomy``."""
    path = anatomy_run(
        args.run_dir,
        parse_list(args.methods, "--methods", example="lrp"),
        atlas=atlas_argument(args),
        labels=args.labels,
        volumes=args.volumes,
        pairs=args.pair,
        statistic=args.statistic,
        values=args.values,
        age_groups=args.groups,
    )
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    shown = table[table["group"] == "all"].sort_values("p_value", key=pd.to_numeric)
    print(shown[_SHOWN].head(15).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"relevance-volume correlations written to {path}")
    return 0
