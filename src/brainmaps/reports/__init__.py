"""Figures and the self-contained HTML report of a run folder.

:func:`build_report` writes ``<run>/report.html`` from what the run folder holds (metrics,
predictions, maps, analysis tables); :func:`render_html_to_png` and
:func:`check_report_in_browser` load it in headless Chromium, when one is installed.
"""

from brainmaps.reports.browser import check_report_in_browser, find_chromium, render_html_to_png
from brainmaps.reports.html import build_report, render_report

__all__ = [
    "build_report",
    "check_report_in_browser",
    "find_chromium",
    "render_html_to_png",
    "render_report",
]
