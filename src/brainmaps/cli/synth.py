"""``brainmaps synth OUT``: write a synthetic cohort with planted effects."""

from __future__ import annotations

import argparse

from brainmaps.data.synthetic import list_regions, make_synthetic_cohort


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "synth",
        help="write a synthetic BIDS cohort with planted group and age effects",
        description="Write a synthetic BIDS cohort built on the MNI152 template, with a group "
        "effect planted in chosen regions (ground_truth_mask.nii.gz) and an age effect.",
    )
    p.add_argument("out", help="output folder (created; must be empty or a brainmaps cohort)")
    p.add_argument("--subjects", type=int, default=120, help="number of subjects (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--effect",
        choices=("atrophy", "intensity"),
        default=None,
        help="kind of planted group effect",
    )
    p.add_argument("--effect-size", type=float, default=None, help="strength of the group effect")
    p.add_argument(
        "--regions",
        default=None,
        help=f"comma-separated regions for the effect, from: {', '.join(list_regions())}",
    )
    p.add_argument("--sites", type=int, default=None, help="number of acquisition sites")
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in mm (default 2)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel jobs")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps synth``."""
    overrides = {
        "effect": args.effect,
        "effect_size": args.effect_size,
        "regions": tuple(r.strip() for r in args.regions.split(",")) if args.regions else None,
        "n_sites": args.sites,
        "voxel_size": args.voxel_size,
    }
    out = make_synthetic_cohort(
        args.out,
        n_subjects=args.subjects,
        seed=args.seed,
        n_jobs=args.n_jobs,
        progress=not args.no_progress,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    print(f"synthetic cohort written to {out}")
    return 0
