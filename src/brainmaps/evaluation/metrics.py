"""Classification and regression metrics, per fold and summarised as mean ± std."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from brainmaps.exceptions import BrainmapsWarning, ConfigError, ShapeError

__all__ = [
    "TASK_METRICS",
    "classification_metrics",
    "format_metrics_table",
    "regression_metrics",
    "summarize_folds",
    "task_metrics",
]

_SUMMARY_ROWS = ("mean", "std")


def _check_proba(y_true, proba) -> tuple[np.ndarray, np.ndarray]:
    """Return integer labels and an (n, n_classes) probability array."""
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 1:  # binary: probability of class 1
        proba = np.column_stack([1.0 - proba, proba])
    y = np.asarray(y_true)
    if proba.ndim != 2 or y.ndim != 1 or len(y) != len(proba):
        raise ShapeError(
            f"classification_metrics needs y_true of shape (n,) and proba of shape "
            f"(n, n_classes), got {y.shape} and {proba.shape}; pass one row per sample."
        )
    if len(y) == 0:
        raise ShapeError("classification_metrics got no samples; y_true is empty.")
    n_classes = proba.shape[1]
    if not np.issubdtype(y.dtype, np.number) or np.any(y != np.round(y)):
        raise ConfigError(
            f"y_true must hold integer class indices 0..{n_classes - 1}, got values like "
            f"{y[:3].tolist()}; encode class names as indices into the proba columns."
        )
    y = y.astype(int)
    if y.min() < 0 or y.max() >= n_classes:
        raise ConfigError(
            f"y_true holds class indices {sorted(set(y.tolist()))} but proba has {n_classes} "
            f"columns; labels must be in 0..{n_classes - 1}."
        )
    return y, proba


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC of class 1, or macro one-vs-rest AUC over the classes present."""
    present = np.unique(y)
    if len(present) < 2:
        warnings.warn(
            f"ROC AUC is undefined (NaN): y_true holds a single class ({present[0]}); a test "
            "set needs both positives and negatives.",
            BrainmapsWarning,
            stacklevel=3,
        )
        return float("nan")
    columns = [1] if proba.shape[1] == 2 else present
    missing = sorted(set(range(proba.shape[1])) - set(present.tolist()))
    if missing and proba.shape[1] > 2:
        warnings.warn(
            f"macro ROC AUC averages over the classes present; class(es) {missing} have no "
            "sample in y_true.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return float(np.mean([roc_auc_score(y == k, proba[:, k]) for k in columns]))


def classification_metrics(y_true, proba) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC, sensitivity and specificity.

    Parameters
    ----------
    y_true : array-like of int, shape (n,)
        True class indices.
    proba : array-like, shape (n, n_classes) or (n,)
        Class probabilities (or scores); a 1-D array is the probability of class 1.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy`` (mean recall over the classes present),
        ``roc_auc``, ``sensitivity`` and ``specificity``. Binary: class 1 is positive.
        Multiclass: macro one-vs-rest AUC, sensitivity and specificity. A value whose
        denominator is empty is NaN; a one-class ``y_true`` gives a NaN AUC with a
        :class:`~brainmaps.BrainmapsWarning` saying why.
    """
    y, proba = _check_proba(y_true, proba)
    n_classes = proba.shape[1]
    pred = proba.argmax(axis=1)
    cm = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(cm, (y, pred), 1)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    recall = np.array([_ratio(tp[k], tp[k] + fn[k]) for k in range(n_classes)])
    spec = np.array([_ratio(tn[k], tn[k] + fp[k]) for k in range(n_classes)])
    if n_classes == 2:
        sensitivity, specificity = recall[1], spec[1]
    else:
        sensitivity, specificity = _nanmean(recall), _nanmean(spec)
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "balanced_accuracy": _nanmean(recall),
        "roc_auc": _roc_auc(y, proba),
        "sensitivity": float(sensitivity),
        "specificity": float(specificity),
    }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """Mean absolute error, root mean squared error, Pearson r and R².

    Parameters
    ----------
    y_true, y_pred : array-like of float, shape (n,)

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r`` (NaN when either side is constant) and ``r2``
        (coefficient of determination, NaN when ``y_true`` is constant).
    """
    y = np.asarray(y_true, dtype=float).ravel()
    p = np.asarray(y_pred, dtype=float).ravel()
    if len(y) != len(p) or len(y) == 0:
        raise ShapeError(
            f"regression_metrics needs y_true and y_pred of the same non-zero length, got "
            f"{len(y)} and {len(p)}."
        )
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if np.std(y) > 0 and np.std(p) > 0:
        r = float(np.corrcoef(y, p)[0, 1])
    else:
        r = float("nan")
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r": r,
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
    }


def summarize_folds(per_fold: pd.DataFrame, label_col: str = "fold") -> pd.DataFrame:
    """Append ``mean`` and ``std`` rows to a per-fold metrics table.

    Parameters
    ----------
    per_fold : pandas.DataFrame
        One row per fold; numeric columns are summarised (NaN folds skipped).
    label_col : str
        Column naming the rows (made str); ``"mean"`` and ``"std"`` go there. Without it,
        the index labels the summary rows.

    Returns
    -------
    pandas.DataFrame
        The fold rows, then ``mean`` and ``std`` (sample standard deviation, ddof=1;
        NaN with a single fold). Any existing summary rows are replaced.
    """
    table = per_fold.copy()
    has_label = label_col in table.columns
    if has_label:
        table[label_col] = table[label_col].astype(str)
        table = table[~table[label_col].isin(_SUMMARY_ROWS)].reset_index(drop=True)
    else:
        table = table[~table.index.isin(_SUMMARY_ROWS)]
    numeric = table.select_dtypes("number").columns.drop(label_col, errors="ignore")
    summary = pd.DataFrame(
        [table[numeric].mean(skipna=True), table[numeric].std(ddof=1, skipna=True)],
    )
    if has_label:
        summary.insert(0, label_col, list(_SUMMARY_ROWS))
        return pd.concat([table, summary], ignore_index=True)
    summary.index = list(_SUMMARY_ROWS)
    return pd.concat([table, summary])


def format_metrics_table(df: pd.DataFrame, label_col: str = "fold", digits: int = 3) -> str:
    """Render a metrics table as aligned text with a final ``mean ± std`` line.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-fold metrics, with or without the rows of :func:`summarize_folds`.
    label_col : str
        The column naming the rows.
    digits : int
        Decimals shown for floats.

    Returns
    -------
    str
        One header line, one line per fold and a ``mean ± std`` line.
    """
    summary = summarize_folds(df, label_col)
    has_label = label_col in summary.columns
    labels = summary[label_col] if has_label else pd.Series(summary.index.astype(str))
    labels = labels.reset_index(drop=True)
    body = summary.drop(columns=[label_col]) if has_label else summary
    body = body.reset_index(drop=True)
    folds = labels[~labels.isin(_SUMMARY_ROWS)].index
    mean_row, std_row = labels[labels == "mean"].index[0], labels[labels == "std"].index[0]
    int_cols = set(df.select_dtypes("integer").columns)
    int_cols |= {c for c in body.columns if str(c).startswith("n_")}  # counts: n_test, ...
    header = [label_col, *body.columns]
    rows = [
        [str(labels[i]), *(_fmt(body.loc[i, c], digits, c in int_cols) for c in body.columns)]
        for i in folds
    ]
    pm = [_fmt_pm(body.loc[mean_row, c], body.loc[std_row, c], digits) for c in body.columns]
    rows.append(["mean ± std", *pm])
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if j == 0 else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value, digits: int, is_int: bool = False) -> str:
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return "nan"
    if is_int:
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _fmt_pm(mean, std, digits: int) -> str:
    if not isinstance(mean, int | float | np.number):
        return ""
    if np.isnan(mean):
        return "nan"
    std_text = "nan" if std is None or pd.isna(std) else f"{float(std):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {std_text}"


#: Metrics function of each task name (:mod:`brainmaps.tasks`): a new task registers here.
TASK_METRICS = {
    "classification": lambda y, outputs: classification_metrics(np.asarray(y).astype(int), outputs),
    "regression": regression_metrics,
}


def task_metrics(task, y_true, outputs) -> dict[str, float]:
    """The metrics of a task (its ``name`` chooses from :data:`TASK_METRICS`).

    Parameters
    ----------
    task : brainmaps.tasks.Task or str
        What was predicted.
    y_true : array-like
        Class indices or values.
    outputs : array-like
        Probabilities ``(n, n_classes)`` or predicted values ``(n,)``.

    Returns
    -------
    dict of str to float
    """
    name = getattr(task, "name", task)
    if name not in TASK_METRICS:
        raise ValueError(f"no metrics for task {name!r}; known: {sorted(TASK_METRICS)}.")
    return TASK_METRICS[name](y_true, outputs)
