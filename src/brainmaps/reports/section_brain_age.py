"""Report blocks of a regression run (brain age): the gap before and after bias correction."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainmaps.reports.figures import DPI, figure_to_png
from brainmaps.run.folder import RunFolder

__all__ = ["bias_blocks", "plot_gap"]

_METRICS = ["mae", "mae_mean_predictor", "r", "r2", "r_gap_y", "r_gap_y_corrected", "mae_corrected"]


def plot_gap(predictions: pd.DataFrame, dpi: int = DPI) -> bytes:
    """Gap against the true value, before and after the bias correction, coloured by fold."""
    fig = Figure(figsize=(8.4, 3.4))
    for i, (column, title) in enumerate(
        (("gap", "before correction"), ("gap_corrected", "after correction")), start=1
    ):
        ax = fig.add_subplot(1, 2, i)
        for k, part in predictions.groupby("fold", sort=True):
            ax.scatter(part["y"], part[column], s=12, alpha=0.75, label=f"fold {k}")
        ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
        y, g = predictions["y"].to_numpy(float), predictions[column].to_numpy(float)
        ok = np.isfinite(g)
        r = np.corrcoef(y[ok], g[ok])[0, 1] if ok.sum() > 2 and np.std(g[ok]) > 0 else np.nan
        ax.set_title(f"gap {title} (r with target {r:.2f})", fontsize=9)
        ax.set_xlabel("true value")
        ax.set_ylabel("prediction - true")
    fig.axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figure_to_png(fig, dpi=dpi)


def bias_blocks(run: RunFolder, table, figure, block) -> list[dict]:
    """The bias table and figure of a regression run trained with the correction."""
    if run.task.is_classification or not run.layout.predictions.is_file():
        return []
    preds = pd.read_csv(run.layout.predictions, sep="\t", dtype={"subject": str})
    if "gap_corrected" not in preds or not np.isfinite(pd.to_numeric(
            preds["gap_corrected"], errors="coerce")).any():  # fmt: skip
        return [
            block(
                "note",
                "No age-bias correction: the folds had no inner validation subjects to fit it "
                "on (train with --val-fraction > 0).",
            )
        ]
    for c in ("gap", "gap_corrected"):
        preds[c] = pd.to_numeric(preds[c], errors="coerce")
    metrics = pd.read_csv(run.layout.metrics, sep="\t", dtype={"fold": str})
    shown = metrics[["fold", *[c for c in _METRICS if c in metrics]]]
    return [
        table(
            shown,
            "Regression to the mean: the MAE of predicting each training fold's mean "
            "(mae_mean_predictor) beside the model's; the correlation of the gap with the "
            "target before and after the correction fitted on each fold's validation "
            "subjects. mae_corrected uses the true values and is not a measure of accuracy.",
        ),
        figure(plot_gap(preds), "Gap against the true value, before and after correction."),
    ]
