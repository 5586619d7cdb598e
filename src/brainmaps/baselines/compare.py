"""One table comparing the CNN with the baselines on identical folds, with a paired test.

Differences between models evaluated by cross-validation are not independent across
folds (the training parts overlap), so a plain paired t-test is too optimistic. The
corrected resampled t-test of Nadeau & Bengio (2003, *Inference for the Generalization
Error*, Machine Learning 52:239) inflates the variance by ``n_test / n_train``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from brainmaps.exceptions import ConfigError, ShapeError

__all__ = ["compare_models", "corrected_resampled_ttest", "format_comparison"]

#: Columns summarised in the comparison, and the per-fold score tested, per task.
SUMMARY = {
    "classification": (("accuracy", "balanced_accuracy", "roc_auc"), "accuracy"),
    "regression": (("mae", "rmse", "r", "r2"), "mae"),
}
_LABELS = {"balanced_accuracy": "balanced acc.", "roc_auc": "AUC", "r2": "R²"}


def corrected_resampled_ttest(scores_a, scores_b, n_train: float, n_test: float):
    """Corrected resampled t-test of two models scored on the same folds.

    With the per-fold differences ``d_j = a_j - b_j`` (j = 1..J),
    ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d))`` (``var`` with ddof=1), with
    J - 1 degrees of freedom (Nadeau & Bengio 2003; for k-fold cross-validation
    ``n_test/n_train = 1/(k-1)``, as in Bouckaert & Frank 2004).

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,)
        Per-fold scores (e.g. accuracy) of the two models, fold by fold.
    n_train, n_test : float
        Training and test set sizes (means over folds).

    Returns
    -------
    t : float
        Positive when ``a`` scores higher.
    p : float
        Two-sided p-value. ``t = 0, p = 1`` when every difference is zero; both are NaN
        when the differences are all equal but non-zero (zero variance).
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ShapeError(
            f"the t-test needs two equal-length score vectors of >= 2 folds, got {a.shape} "
            f"and {b.shape}."
        )
    if not (n_train > 0 and n_test > 0):
        raise ConfigError(f"n_train and n_test must be positive, got {n_train}, {n_test}.")
    d = a - b
    if not np.isfinite(d).all():
        return float("nan"), float("nan")
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var <= 1e-15 * max(1.0, mean * mean):
        return (0.0, 1.0) if abs(mean) < 1e-12 else (float("nan"), float("nan"))
    t = mean / np.sqrt((1.0 / len(d) + n_test / n_train) * var)
    p = 2.0 * stats.t.sf(abs(t), df=len(d) - 1)
    return float(t), float(p)


def _fold_rows(table: pd.DataFrame, model: str) -> pd.DataFrame:
    rows = table[~table["fold"].astype(str).isin(("mean", "std"))].copy()
    rows["fold"] = rows["fold"].astype(str)
    if rows["fold"].duplicated().any():
        raise ConfigError(f"per-fold metrics of {model!r} list a fold twice.")
    return rows.set_index("fold")


def compare_models(
    per_fold: Mapping[str, pd.DataFrame],
    *,
    n_train: float,
    n_test: float,
    task: str = "classification",
    reference: str | None = "cnn",
) -> pd.DataFrame:
    """Summarise models scored on identical folds and test each against a reference.

    Parameters
    ----------
    per_fold : mapping of str to pandas.DataFrame
        Model name -> metrics table with a ``fold`` column (``mean``/``std`` rows are
        ignored), e.g. a run's ``metrics.tsv``. Every model must have the same folds.
    n_train, n_test : float
        Mean training and test sizes of the folds (for the corrected t-test).
    task : {"classification", "regression"}
        Classification tests per-fold accuracy; regression tests per-fold MAE.
    reference : str, optional
        The model the others are tested against (no test if absent from ``per_fold``).

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model``, ``n_folds``, ``<metric>_mean`` and
        ``<metric>_std`` for accuracy, balanced accuracy and AUC (MAE, RMSE, r, R² for
        regression), and ``t`` and ``p`` of the corrected resampled t-test of the model
        against ``reference`` (positive ``t``: the model's score is higher).
    """
    if task not in SUMMARY:
        raise ConfigError(f"task must be one of {tuple(SUMMARY)}, got {task!r}.")
    columns, tested = SUMMARY[task]
    tables = {name: _fold_rows(t, name) for name, t in per_fold.items()}
    folds = {name: sorted(t.index) for name, t in tables.items()}
    if len({tuple(f) for f in folds.values()}) > 1:
        raise ConfigError(
            f"models were scored on different folds ({folds}); compare them on the same folds."
        )
    ref = tables.get(reference) if reference is not None else None
    rows = []
    for name, t in tables.items():
        row = {"model": name, "n_folds": len(t)}
        for c in columns:
            values = pd.to_numeric(t[c], errors="coerce") if c in t else pd.Series(np.nan)
            row[f"{c}_mean"], row[f"{c}_std"] = values.mean(), values.std(ddof=1)
        row["t"] = row["p"] = np.nan
        if ref is not None and name != reference:
            a, b = t[tested], ref.loc[t.index, tested]
            row["t"], row["p"] = corrected_resampled_ttest(a, b, n_train, n_test)
        rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(table: pd.DataFrame, digits: int = 3, reference: str = "cnn") -> str:
    """Render :func:`compare_models` output as aligned text (``mean ± std`` cells).

    The t and p columns are those of the test against ``reference``.
    """
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    header = ["model", *(_LABELS.get(m, m.replace("_", " ")) for m in metrics)]
    header += [f"t vs {reference}", "p"]
    rows = [header]
    for _, r in table.iterrows():
        cells = [str(r["model"])]
        cells += [_pm(r[f"{m}_mean"], r[f"{m}_std"], digits) for m in metrics]
        cells += [_num(r["t"], 2), _num(r["p"], 3)]
        rows.append(cells)
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def _num(value, digits: int) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _pm(mean, std, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "nan"
    std_text = "nan" if std is None or pd.isna(std) else f"{float(std):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {std_text}"
