"""``brainmaps report RUN [--out FILE] [--png FILE]``: the self-contained HTML report."""

from __future__ import annotations

import argparse
import time

from brainmaps.cli._args import add_progress_flag
from brainmaps.reports.analyse import STEPS, analyse_run
from brainmaps.reports.html import build_report
from brainmaps.validation import check_output_file, parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "report",
        help="write the self-contained HTML report of a run (RUN/report.html)",
        description="Render what the run folder holds (metrics, ROC curves, baselines, "
        "class-mean maps, the per-method trust table, overlap, atlas regions, "
        "localisation, faithfulness, sanity checks, mask-restricted re-evaluation, "
        "first-layer statistics) into one HTML file with "
        "every figure embedded; it opens offline. First computes every analysis whose "
        "table is missing or older than the maps (--no-analyse renders only what is "
        "there); sections whose inputs are missing name the command that computes them.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    p.add_argument(
        "--png",
        help="also render the report to this PNG with headless Chromium and check that "
        "no image is broken (needs chromium; set BRAINMAPS_CHROMIUM to choose the binary)",
    )
    p.add_argument(
        "--no-analyse", action="store_true", help="render only; compute no missing analysis"
    )
    p.add_argument(
        "--steps",
        help=f"comma-separated analyses to bring up to date (default: {','.join(STEPS)})",
    )
    p.add_argument("--atlas", help="atlas for the region ranking: built-in name or NIfTI")
    p.add_argument("--labels", help="region table (TSV/CSV/LUT) of --atlas")
    p.add_argument(
        "--faithfulness-subjects",
        type=int,
        default=40,
        help="subjects whose maps get deletion/insertion curves (default 40)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps report``."""
    start = time.perf_counter()
    for flag, path in (("--out", args.out), ("--png", args.png)):
        if path:
            check_output_file(path, flag)
    if not args.no_analyse:
        steps = parse_list(args.steps, "--steps", choices=STEPS)
        analyse_run(
            args.run_dir,
            steps,
            atlas=args.atlas,
            labels=args.labels,
            faithfulness_subjects=args.faithfulness_subjects,
            device=args.device,
            progress=not args.no_progress,
        )
    path = build_report(args.run_dir, out=args.out)
    size = path.stat().st_size / 1e6
    print(f"report written to {path} ({size:.1f} MB, {time.perf_counter() - start:.1f} s)")
    if args.png:
        from brainmaps.reports.browser import check_report_in_browser, render_html_to_png

        check = check_report_in_browser(path)
        render_html_to_png(path, args.png)
        print(f"screenshot written to {args.png}")
        if not check["ok"]:
            print(f"{check['n_broken']} of {check['n_images']} images are broken in Chromium:")
            for src in check["broken"]:
                print(f"  {src}")
            return 1
    return 0
