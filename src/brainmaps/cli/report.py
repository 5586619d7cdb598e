"""``brainmaps report RUN [--out FILE] [--png FILE]``: the self-contained HTML report."""

from __future__ import annotations

import argparse
import time

from brainmaps.reports.html import build_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "report",
        help="write the self-contained HTML report of a run (RUN/report.html)",
        description="Render what the run folder holds (metrics, ROC curves, baselines, "
        "class-mean maps, overlap, atlas regions, localisation, faithfulness, "
        "mask-restricted re-evaluation, first-layer statistics) into one HTML file with "
        "every figure embedded; it opens offline. Sections whose inputs are missing name "
        "the command that computes them.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument("--out", help="HTML file to write (default: RUN/report.html)")
    p.add_argument(
        "--png",
        help="also render the report to this PNG with headless Chromium and check that "
        "no image is broken (needs chromium; set BRAINMAPS_CHROMIUM to choose the binary)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps report``."""
    start = time.perf_counter()
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
