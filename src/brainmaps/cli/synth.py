"""``brainmaps synth OUT``: write a synthetic cohort with planted effects."""

from __future__ import annotations

import argparse

from brainmaps.cli._args import add_progress_flag
from brainmaps.data.synthetic import (
    PRESET_DIFFICULTY,
    SYNTH_PRESETS,
    list_regions,
    make_synthetic_cohort,
)
from brainmaps.validation import check_output_dir, parse_list


def _presets_help() -> str:
    lines = []
    for name, settings in SYNTH_PRESETS.items():
        where = "both hippocampi" if len(settings["regions"]) == 2 else "5 regions"
        what = f"{settings['effect']} {settings['effect_size']:g} in {where}"
        lines.append(f"{name} ({what}): {PRESET_DIFFICULTY[name]}")
    return "; ".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "synth",
        help="write a synthetic BIDS cohort with planted group and age effects",
        description="Write a synthetic BIDS cohort built on the MNI152 template, with a group "
        "effect planted in chosen regions (ground_truth_mask.nii.gz) and an age effect. "
        "Presets of the group effect, with the 5-fold accuracy of 120 subjects at the "
        "demo's 36x44x36 grid: "
        + _presets_help()
        + ". --effect, --effect-size and --regions override the preset.",
    )
    p.add_argument("out", help="output folder (created; must be empty or a brainmaps cohort)")
    p.add_argument("--subjects", type=int, default=120, help="number of subjects (default 120)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--preset",
        choices=tuple(SYNTH_PRESETS),
        default="default",
        help="group-effect settings (default: the demo's, a 30%% intensity decrease in both "
        "hippocampi, both superior frontal gyri and the precuneus)",
    )
    p.add_argument(
        "--effect",
        choices=("atrophy", "intensity"),
        default=None,
        help="kind of planted group effect (overrides the preset)",
    )
    p.add_argument("--effect-size", type=float, default=None, help="strength of the group effect")
    p.add_argument(
        "--regions",
        default=None,
        help=f"comma-separated regions for the effect, from: {', '.join(list_regions())}",
    )
    p.add_argument("--sites", type=int, default=None, help="number of acquisition sites")
    p.add_argument(
        "--site-confound",
        type=float,
        default=None,
        help="0-1: how strongly the group decides the site (half the sites lean to each "
        "group; default 0, independent)",
    )
    p.add_argument(
        "--site-bias",
        type=float,
        default=None,
        help="sd of each site's own smooth intensity field (its coil profile; default 0)",
    )
    p.add_argument(
        "--clinical",
        action="store_true",
        default=None,
        help="also write mmse, progression and batch (a null flag) tied to the planted effect",
    )
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size in mm (default 2)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel jobs")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps synth``."""
    check_output_dir(args.out, "OUT")
    settings = dict(SYNTH_PRESETS[args.preset])
    if args.effect is not None and args.effect != settings["effect"]:
        settings.pop("effect_size")  # the new effect's own default strength
    regions = parse_list(args.regions, "--regions", choices=list_regions())
    overrides = {
        "effect": args.effect,
        "effect_size": args.effect_size,
        "regions": tuple(regions) if regions else None,
        "n_sites": args.sites,
        "site_confound": args.site_confound,
        "site_bias": args.site_bias,
        "clinical": args.clinical,
        "voxel_size": args.voxel_size,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    out = make_synthetic_cohort(
        args.out,
        n_subjects=args.subjects,
        seed=args.seed,
        n_jobs=args.n_jobs,
        progress=not args.no_progress,
        **settings,
    )
    print(f"synthetic cohort written to {out}")
    return 0
