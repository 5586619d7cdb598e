"""The report section of ``brainmaps thresholds``: operating points, ROC and calibration.

Reads ``analysis/thresholds.tsv``, ``roc.tsv`` and ``calibration.tsv`` (written by
:func:`brainmaps.steps.thresholds.thresholds`); computes nothing.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from brainmaps.evaluation.operating_points import METRICS
from brainmaps.reports.figures import DPI, figure_to_png
from brainmaps.run.folder import RunFolder

__all__ = ["plot_operating_points", "thresholds_section"]

_NAMES = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "PPV",
          "npv": "NPV", "accuracy": "accuracy"}  # fmt: skip


def plot_operating_points(
    roc: pd.DataFrame, points: pd.DataFrame, calibration: pd.DataFrame | None, dpi: int = DPI
) -> bytes:
    """The out-of-fold ROC curve with the operating points, beside the calibration curve.

    Parameters
    ----------
    roc : pandas.DataFrame
        ``fpr, tpr`` (``analysis/roc.tsv``).
    points : pandas.DataFrame
        ``rule, sensitivity, specificity`` (``analysis/thresholds.tsv``): each rule is
        marked at its nested out-of-fold (1 - specificity, sensitivity).
    calibration : pandas.DataFrame, optional
        ``mean_predicted, observed`` (``analysis/calibration.tsv``).
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    fig = Figure(figsize=(9.6, 4.2))
    ax, cal = fig.subplots(1, 2)
    ax.plot(roc["fpr"], roc["tpr"], lw=2, color="black", label="out-of-fold ROC")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    markers = "osD^vP*X"
    for i, row in enumerate(points.itertuples(index=False)):
        ax.plot(1 - row.specificity, row.sensitivity, markers[i % len(markers)], ms=8,
                label=f"{row.rule} (t = {row.threshold:.3g})")  # fmt: skip
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title="ROC and nested operating points")  # fmt: skip
    ax.legend(loc="lower right", fontsize=8)
    cal.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    if calibration is not None and len(calibration):
        cal.plot(calibration["mean_predicted"], calibration["observed"], "o-", lw=2,
                 label="out-of-fold")  # fmt: skip
    cal.set(xlabel="mean predicted probability", ylabel="observed fraction positive",
            xlim=(0, 1), ylim=(-0.02, 1.02), title="Calibration (quantile bins)")  # fmt: skip
    cal.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"rule": df["rule"].astype(str), "threshold": df["threshold"]})
    for m in METRICS:
        shown[f"{_NAMES[m]} [95% CI]"] = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in zip(df[m], df[f"{m}_low"], df[f"{m}_high"], strict=True)
        ]
    shown["fold thresholds: mean ± std (range)"] = [
        f"{r.threshold_fold_mean:.3g} ± {r.threshold_fold_std:.2g} "
        f"({r.threshold_fold_min:.3g}–{r.threshold_fold_max:.3g})"
        for r in df.itertuples(index=False)
    ]
    return shown


def thresholds_section(run: RunFolder) -> list[dict] | None:
    """Blocks of the "Operating points" section, or None when the tables are absent."""
    from brainmaps.reports.sections import block, figure, table

    if not run.task.is_classification or len(run.classes) != 2:
        return [block("note", "Operating points apply to binary classification runs only.")]
    path = run.layout.thresholds
    if not path.is_file():
        return None
    df = pd.read_csv(path, sep="\t", dtype={"rule": str})
    positive = df["positive"].iloc[0] if "positive" in df else run.classes[1]
    caption = (
        f"Thresholds on p({positive}). For each fold the rule's threshold is chosen on the "
        "out-of-fold predictions of the other folds and applied to this fold, so the pooled "
        "metrics never saw their own subjects; 'threshold' is chosen on all out-of-fold "
        "predictions (use it on new scans). 95% CIs: stratified bootstrap of the calls. "
        "Fold thresholds: the spread of the per-fold choice (its stability)."
    )
    blocks = [table(_shown(df), caption)]
    roc_path, cal_path = run.layout.roc, run.layout.calibration
    if roc_path.is_file():
        cal = pd.read_csv(cal_path, sep="\t") if cal_path.is_file() else None
        png = plot_operating_points(pd.read_csv(roc_path, sep="\t"), df, cal)
        blocks.append(figure(png, "Out-of-fold ROC with the operating points; calibration."))
    return blocks
