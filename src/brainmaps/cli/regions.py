"""``brainmaps regions RUN [--atlas A.nii.gz --labels A.tsv | --builtin aal]``: atlas ranking."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.builtin_atlases import DEFAULT_ATLAS, list_builtin_atlases
from brainmaps.analysis.regions import format_top_regions
from brainmaps.cli._args import atlas_argument
from brainmaps.steps.regions import regions
from brainmaps.validation import check_int, parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "regions",
        help="rank atlas regions by the share of their voxels in each class-mean map",
        description="Rank the regions of an atlas for every method's class-mean maps "
        "(Kan et al. 2020, Table 2): the fraction of each region's voxels inside the "
        "binarised map and the mean map value inside it, each normalised to sum to 1. "
        "Map and atlas meet through their affines. Regions named left/right are checked "
        "against the side of their centroid. Writes RUN/analysis/regions_<atlas>.tsv. "
        f"Built-in atlases: {', '.join(list_builtin_atlases()) or 'none'}.",
    )
    p.add_argument("run_dir", help="run folder with maps ('brainmaps explain')")
    p.add_argument("--atlas", help="label NIfTI (integer values, 0 = background)")
    p.add_argument(
        "--labels",
        help="region table of --atlas: TSV/CSV with index,name columns or a FreeSurfer LUT "
        "(default: a .tsv/.csv next to the atlas with the same stem)",
    )
    p.add_argument(
        "--builtin", help=f"a built-in atlas instead of --atlas (default: {DEFAULT_ATLAS})"
    )
    p.add_argument("--methods", help="comma-separated methods (default: all with maps)")
    p.add_argument(
        "--threshold",
        default="top10%",
        help="binarisation: 'topK%%' of brain voxels (default top10%%), 'pNN' percentile, "
        "a number, or 'paper' (0.65 min-max for MP and Grad-CAM, 0.04 for guided backprop)",
    )
    p.add_argument(
        "--values",
        default="positive",
        choices=("positive", "absolute", "signed"),
        help="how signed maps count: positive evidence only (default), magnitude, or raw",
    )
    p.add_argument("--top", type=int, default=10, help="regions printed per method (default 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps regions``."""
    check_int("top", args.top, min=1, flag="--top")
    atlas = atlas_argument(args)
    methods = parse_list(args.methods, "--methods", example="grad_cam,gradient")
    path = regions(
        args.run_dir,
        atlas=atlas,
        labels=args.labels,
        methods=methods,
        threshold=args.threshold,
        values=args.values,
    )
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    for method, rows in table.groupby("method", sort=False):
        maps = rows["map"].unique()
        name = "conjoined" if "conjoined" in maps else maps[0]
        print(f"{method}: top regions of the {name} map ({args.threshold})")
        print(format_top_regions(rows[rows["map"] == name], args.top))
    print(f"regions written to {path}")
    return 0
