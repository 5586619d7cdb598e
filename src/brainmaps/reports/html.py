"""The self-contained HTML report of a run folder (``<run>/report.html``).

The sections come from :func:`brainmaps.reports.sections.collect_sections`; this module
renders them with the Jinja2 template shipped in ``brainmaps/reports/templates`` and
embeds every figure as a ``data:image/png;base64,`` URI, so the file opens offline and
can be mailed or archived alone. The CSS is inline and no external resource (font,
script, stylesheet) is referenced.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

from brainmaps import __version__
from brainmaps.reports.sections import collect_sections
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.utils import atomic_path

__all__ = ["build_report", "render_report"]

TEMPLATE = "report.html.j2"


def _data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _code(text: str) -> Markup:
    """Escape ``text`` and turn `backticked` spans into ``<code>`` elements."""
    escaped = str(escape(text))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("brainmaps.reports", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = _data_uri
    env.filters["code"] = _code
    return env


def render_report(run_dir: str | os.PathLike | RunFolder) -> str:
    """Render the report of a run folder to an HTML string (nothing is written).

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder written by ``brainmaps train``; maps and analysis tables found in it
        are shown, missing ones get a note naming the command that computes them.

    Returns
    -------
    str
        A complete, self-contained HTML document.

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a run folder.
    """
    run = open_run(run_dir)
    sections = collect_sections(run)
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            sections=sections,
            run_name=run.path.resolve().name,
            run_path=str(run.path.resolve()),
            version=__version__,
            built=f"{dt.datetime.now():%Y-%m-%d %H:%M}",
        )
    )


def build_report(
    run_dir: str | os.PathLike | RunFolder, out: str | os.PathLike | None = None
) -> Path:
    """Build the self-contained HTML report of a run folder.

    Sections, in order: summary, performance (metrics, ROC curves, baselines), class-mean
    maps of every method (MNI152 ortho slices and glass brains), the trust table (each
    method's checks and verdict, failing methods in red), overlap between methods
    (Dice matrices), atlas regions, localisation, faithfulness, mask-restricted
    re-evaluation, remove and retrain (ROAR / KAR), first-layer statistics, and the list
    of files. Only what is already
    in the run folder is shown.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder written by ``brainmaps train``.
    out : str or os.PathLike, optional
        Where to write the report (default ``<run_dir>/report.html``).

    Returns
    -------
    pathlib.Path
        The written file. It is written atomically: an error while building leaves no
        partial file (and any previous report untouched).

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a run folder.
    """
    run = open_run(run_dir)
    path = Path(out) if out is not None else run.layout.report
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(run), encoding="utf-8")
        tmp.chmod(0o644)  # a temporary file is private (0600); a report is to be shared
    return path
