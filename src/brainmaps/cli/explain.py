"""``brainmaps explain RUN``: out-of-fold attribution maps for every subject of a run."""

from __future__ import annotations

import argparse

import yaml

from brainmaps.attribution import list_methods
from brainmaps.attribution.cohort import occlusion_cohort_map
from brainmaps.cli._args import add_progress_flag
from brainmaps.exceptions import ConfigError
from brainmaps.run.layout import RunLayout
from brainmaps.steps import explain
from brainmaps.validation import parse_list

DEFAULT_METHODS = "grad_cam,guided_backprop"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "explain",
        help="attribution maps for every subject, each from its out-of-fold model",
        description="Compute attribution maps for every subject of a run with the fold "
        "model that did not train on it. Writes RUN/maps/<method>/sub-<id>.nii.gz, the "
        "class-mean maps mean_<class>.nii.gz, mean_conjoined.nii.gz (regression: mean_all, "
        "mean_young, mean_old, mean_gap_positive, mean_gap_negative) and maps.tsv. "
        "Subjects already done are skipped. Methods: " + ", ".join(list_methods()) + ".",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated method names, or 'all' (default: {DEFAULT_METHODS})",
    )
    p.add_argument(
        "--target",
        default="predicted",
        help="output to explain: predicted (default), true, or a class name",
    )
    p.add_argument(
        "--layer",
        help="layer for grad_cam / hires_cam / layer_cam / cam (default: the last conv block)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="a method option, e.g. --set occlusion.window_mm=12 (repeatable)",
    )
    p.add_argument("--batch-size", type=int, default=4, help="subjects per method call")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--native-space",
        action="store_true",
        help="also write each map resampled onto the subject's source image",
    )
    p.add_argument(
        "--occlusion-cohort",
        action="store_true",
        help="also write maps/occlusion/cohort_accuracy_drop.nii.gz: the drop in test "
        "accuracy per occluded cube (BrainImageNet); uses --set occlusion.window_mm/"
        "stride_mm/fill",
    )
    p.add_argument(
        "--subjects-per-fold",
        type=int,
        help="explain only this many test subjects per fold (a seeded sample taking the "
        "classes in turn; for slow methods on large cohorts)",
    )
    p.add_argument(
        "--groups",
        default="47,60",
        metavar="YOUNG_BELOW,OLD_FROM",
        help="regression runs: cutoffs of the mean_young and mean_old group maps in the "
        "target's units (default 47,60: Hofmann et al.'s young < 47 and old >= 60 years), "
        "or 'none'; mean_all and, from predictions.tsv, mean_gap_positive / "
        "mean_gap_negative are always written",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute a method's maps that were made with other options (target, layer, "
        "--set, sample); without it such a call is refused",
    )
    add_progress_flag(p)
    p.set_defaults(run=run)


def parse_methods(text: str) -> list[str]:
    """Split ``--methods``; ``all`` means every registered method."""
    names = parse_list(text, "--methods", example=",".join(list_methods()[:2]))
    return list_methods() if names == ["all"] else names


def parse_options(items: list[str]) -> dict[str, dict]:
    """Turn ``--set method.option=value`` items into ``{method: {option: value}}``."""
    options: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot or not method or not option:
            raise ConfigError(
                f"--set {item!r} is not METHOD.OPTION=VALUE (e.g. occlusion.window_mm=12)."
            )
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, list):
            parsed = tuple(parsed)
        options.setdefault(method.strip(), {})[option.strip()] = parsed
    return options


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps explain``."""
    methods = parse_methods(args.methods)
    target = args.target
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    tables = explain(
        args.run_dir,
        methods,
        target=target,
        layer=args.layer,
        options=parse_options(args.set),
        batch_size=args.batch_size,
        device=args.device,
        native_space=args.native_space,
        subjects_per_fold=args.subjects_per_fold,
        age_groups=args.groups,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if args.occlusion_cohort:
        occ = {k: v for k, v in parse_options(args.set).get("occlusion", {}).items()}
        keep = {k: occ[k] for k in ("window_mm", "stride_mm", "fill") if k in occ}
        path = occlusion_cohort_map(
            args.run_dir, device=args.device, progress=not args.no_progress, **keep
        )
        print(f"cohort occlusion map: {path}")
    for name, table in tables.items():
        seconds = table["seconds"].mean() if len(table) else float("nan")
        folder = RunLayout(args.run_dir).maps_dir(name)
        print(f"{name}: {len(table)} maps in {folder} ({seconds:.2f} s/subject)")
    return 0
