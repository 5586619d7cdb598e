"""The report's anatomy section: relevance in atlas regions against the regions' volumes."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from brainmaps.reports.figures import DPI, figure_to_png
from brainmaps.run.folder import RunFolder

__all__ = ["anatomy_section", "plot_relevance_vs_volume"]

_COLUMNS = ["method", "group", "pair", "n", "r", "p_value", "rho", "r_partial", "p_partial",
            "q_value"]  # fmt: skip
_TOP = 10


def plot_relevance_vs_volume(subjects: pd.DataFrame, pair: str, dpi: int = DPI) -> bytes:
    """Scatter of each subject's relevance in a pair's regions against their volume, one
    panel per method, coloured by the subject's target (age) on a regression run."""
    methods = list(dict.fromkeys(subjects["method"]))
    fig = Figure(figsize=(4.0 * len(methods), 3.4))
    for i, method in enumerate(methods, start=1):
        part = subjects[subjects["method"] == method]
        ax = fig.add_subplot(1, len(methods), i)
        colour = pd.to_numeric(part["label"], errors="coerce")
        numeric = colour.notna().all()
        points = ax.scatter(
            part[f"volume_{pair}"], part[f"relevance_{pair}"], s=14, alpha=0.8,
            c=colour if numeric else None, cmap="viridis" if numeric else None,
        )  # fmt: skip
        if numeric:
            fig.colorbar(points, ax=ax, label="target")
        ax.set_title(f"{method}: {pair}", fontsize=9)
        ax.set_xlabel("volume")
        ax.set_ylabel("relevance")
    fig.tight_layout()
    return figure_to_png(fig, dpi=dpi)


def anatomy_section(run: RunFolder) -> list[dict] | None:
    """Blocks of the "Relevance and anatomy" section (``None`` before ``brainmaps anatomy``)."""
    paths = [p for p in run.layout.analysis_tables("anatomy_") if not p.stem.endswith("_subjects")]
    if not paths:
        return None
    from brainmaps.reports.sections import block, figure, table

    out = [
        block(
            "note",
            "Per subject, the share of its map's relevance inside each region (counted on the "
            "atlas grid) against the region's volume, correlated across subjects; r_partial "
            "holds the run's target (age) fixed, since relevance and volume may both follow "
            "it. q-values: Benjamini-Hochberg over the pairs of one method and group. Rows "
            f"for all subjects, the {_TOP} smallest p-values.",
        )
    ]
    for path in paths:
        df = pd.read_csv(path, sep="\t")
        out.append(block("heading", f"atlas: {path.stem[len('anatomy_') :]}"))
        shown = df[df["group"] == "all"].sort_values("p_value").head(_TOP)
        out.append(table(shown[[c for c in _COLUMNS if c in shown]], str(path.name)))
        groups = df[(df["pair"] == "ventricles") & (df["group"] != "all")]
        if len(groups):
            out.append(table(groups[[c for c in _COLUMNS if c in groups]], "ventricles by group"))
        subjects_path = path.with_name(f"{path.stem}_subjects.tsv")
        if subjects_path.is_file() and len(shown):
            pair = "ventricles" if (df["pair"] == "ventricles").any() else shown["pair"].iloc[0]
            subjects = pd.read_csv(subjects_path, sep="\t")
            if f"volume_{pair}" in subjects:
                png = plot_relevance_vs_volume(subjects, pair)
                out.append(figure(png, f"relevance against volume: {pair}"))
    return out
