"""The report's clinical section: the out-of-fold score against clinical measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainmaps.reports.figures import DPI, figure_to_png
from brainmaps.run.folder import RunFolder
from brainmaps.run.stages import read_stage

__all__ = ["clinical_section", "plot_score_vs_measures"]

_KINDS = {
    "spearman": ("Spearman correlation of the score with each measure", ["variable", "within",
                 "n", "estimate", "p_value", "p_fdr"]),
    "ols": ("OLS: score ~ class + covariates (coefficient, 95 % CI)", ["variable", "level",
            "n", "estimate", "ci_low", "ci_high", "p_value"]),
    "permutation": ("Subgroups: difference of mean scores, permutation test, Cohen's d",
                    ["variable", "level", "n", "estimate", "effect_size", "p_value", "p_fdr"]),
}  # fmt: skip


def plot_score_vs_measures(frame: pd.DataFrame, measures: list[str], dpi: int = DPI) -> bytes:
    """Scatter of the score against each measure, one colour per class."""
    fig = Figure(figsize=(4.2 * len(measures), 3.4))
    for i, measure in enumerate(measures, start=1):
        ax = fig.add_subplot(1, len(measures), i)
        for label, part in frame.groupby("label", sort=True):
            ax.scatter(pd.to_numeric(part[measure], errors="coerce"), part["score"], s=14,
                       alpha=0.75, label=str(label))  # fmt: skip
        ax.set_xlabel(measure)
        ax.set_ylabel("out-of-fold score (log-odds)")
        ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return figure_to_png(fig, dpi=dpi)


def clinical_section(run: RunFolder) -> list[dict] | None:
    """Blocks of the "Clinical measures" section (``None`` before ``brainmaps clinical``)."""
    path = run.layout.analysis("clinical")
    if not path.is_file():
        return None
    from brainmaps.reports.sections import block, figure, table
    from brainmaps.steps.clinical import clinical_frame

    df = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    stage = read_stage(run.layout.stage_record("clinical")) or {}
    options = stage.get("options", stage)
    positive = run.classes[1] if len(run.classes) == 2 else "the second class"
    out = [
        block(
            "note",
            f"Each subject's score is its out-of-fold log-odds of {positive}: the fold model "
            "that did not train on it. Correlations within a class are not driven by the "
            f"class difference. {int(options.get('n_permutations', 0)) or 'Seeded'} "
            "permutations per subgroup comparison.",
        )
    ]
    for kind, (caption, columns) in _KINDS.items():
        part = df[df["analysis"] == kind]
        if len(part):
            out.append(table(part[[c for c in columns if c in part]], caption))
    measures = [m for m in options.get("measures", []) if m]
    if measures:
        frame = clinical_frame(run)
        present = [m for m in measures if m in frame and np.isfinite(
            pd.to_numeric(frame[m], errors="coerce")).any()]  # fmt: skip
        if present:
            out.append(figure(plot_score_vs_measures(frame, present), "Score against measures"))
    return out
