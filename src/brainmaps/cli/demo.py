"""``brainmaps demo``: the whole chain on a built-in synthetic cohort."""

from __future__ import annotations

import argparse
import time

from brainmaps.cli._args import add_progress_flag, argument_type
from brainmaps.data.preprocess import parse_grid
from brainmaps.demo import DemoSettings, run_demo
from brainmaps.evaluation.metrics import format_metrics_table
from brainmaps.run.layout import RunLayout
from brainmaps.validation import check_output_dir


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    d = DemoSettings()
    p = sub.add_parser(
        "demo",
        help="synthetic cohort -> cross-validated xin2019 -> maps -> analyses -> report",
        description="Generate a synthetic cohort with a planted group effect, train xin2019 "
        "with cross-validation at a reduced grid, print the metrics, write the out-of-fold "
        "maps of every attribution method, run every analysis and write the HTML report. "
        "Re-running reuses what is done.",
    )
    p.add_argument("--out", default="demo", help="demo folder (default ./demo)")
    p.add_argument("--subjects", type=int, default=d.n_subjects, help="synthetic subjects")
    grid = argument_type(parse_grid)
    p.add_argument("--grid", type=grid, default=d.grid_shape, help="model grid XxYxZ")
    p.add_argument(
        "--effect", choices=("atrophy", "intensity"), default=d.effect, help="planted group effect"
    )
    p.add_argument("--effect-size", type=float, default=d.effect_size, help="its strength")
    p.add_argument("--folds", type=int, default=d.folds, help="CV folds")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs per fold")
    p.add_argument("--n-jobs", type=int, default=d.n_jobs, help="parallel jobs")
    p.add_argument(
        "--no-maps", action="store_true", help="skip the attribution maps (training only)"
    )
    p.add_argument("--no-report", action="store_true", help="skip the analyses and the HTML report")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps demo``."""
    check_output_dir(args.out, "--out")
    settings = DemoSettings(
        n_subjects=args.subjects,
        grid_shape=tuple(args.grid),
        effect=args.effect,
        effect_size=args.effect_size,
        folds=args.folds,
        epochs=args.epochs,
        n_jobs=args.n_jobs,
        report=not args.no_report,
        **({"methods": ()} if args.no_maps else {}),
    )
    start = time.perf_counter()
    result = run_demo(args.out, settings, progress=not args.no_progress)
    print(format_metrics_table(result.metrics))
    layout = RunLayout(result.out)
    maps = layout.maps_root
    if maps.is_dir():
        print(f"attribution maps: {', '.join(sorted(p.name for p in maps.iterdir()))} in {maps}")
    print(f"run folder: {result.out}  ({time.perf_counter() - start:.0f} s)")
    report = layout.report
    if report.is_file():
        print(f"report: {report}")
    return 0
