"""Feature importances of the morphometry baselines: a table and a bar plot.

Kan et al. (Fig. 1) show the most important morphometric features of their XGBoost and
logistic-regression baselines; :func:`plot_importances` draws the same kind of figure
from the per-fold importances of :func:`importance_table`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.utils import atomic_path

__all__ = ["importance_table", "plot_importances"]


def importance_table(per_fold: Sequence[np.ndarray], names: Sequence[str]) -> pd.DataFrame:
    """Summarise per-fold feature importances, most important first.

    Parameters
    ----------
    per_fold : sequence of numpy.ndarray, each of shape (n_features,)
        One importance vector per outer fold (e.g. standardised coefficients).
    names : sequence of str
        Feature names.

    Returns
    -------
    pandas.DataFrame
        Columns ``rank`` (1 = largest ``|importance|``), ``feature``, ``importance``
        (mean over folds), ``std`` (over folds, ddof=1) and ``fold_<k>``, sorted by rank.
    """
    values = np.vstack([np.asarray(v, dtype=float).ravel() for v in per_fold])
    if values.shape[1] != len(names):
        raise ShapeError(
            f"importances have {values.shape[1]} features but {len(names)} names were given."
        )
    table = pd.DataFrame({"feature": [str(n) for n in names]})
    table["importance"] = values.mean(axis=0)
    table["std"] = values.std(axis=0, ddof=1) if len(values) > 1 else np.nan
    for k, row in enumerate(values):
        table[f"fold_{k}"] = row
    order = np.argsort(-np.abs(table["importance"].to_numpy()), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def plot_importances(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    top: int = 20,
    title: str | None = None,
    xlabel: str = "importance (mean ± sd over folds)",
) -> None:
    """Draw a horizontal bar plot of the ``top`` features of an importance table.

    Bars are the mean over folds with the standard deviation as error bars; negative
    values (e.g. coefficients favouring the first class) are drawn in another colour.
    The figure is written atomically as PNG with matplotlib's Agg canvas (no display,
    no global backend change).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`importance_table` (``feature``, ``importance``, ``std``).
    path : str or os.PathLike
        The ``.png`` to write.
    top : int
        Number of features shown.
    title, xlabel : str, optional
        Axis texts.
    """
    if top < 1:
        raise ConfigError(f"top must be a positive integer, got {top!r}.")
    missing = {"feature", "importance"} - set(table.columns)
    if missing:
        raise ConfigError(f"importance table lacks column(s) {sorted(missing)}.")
    shown = table.head(top).iloc[::-1]
    values = shown["importance"].to_numpy(dtype=float)
    errors = shown["std"].to_numpy(dtype=float) if "std" in shown else None
    if errors is not None and not np.isfinite(errors).any():
        errors = None
    fig = Figure(figsize=(6.5, 1.2 + 0.28 * len(shown)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = np.where(values < 0, "#4477aa", "#cc6677")
    ax.barh(np.arange(len(shown)), values, xerr=errors, color=colors, ecolor="#333333")
    ax.set_yticks(np.arange(len(shown)), shown["feature"].astype(str).tolist(), fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
