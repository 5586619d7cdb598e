"""One table comparing the CNN with the baselines on identical folds, with a paired test.

Differences between models evaluated by cross-validation are not independent across
folds (the training parts overlap), so a plain paired t-test is too optimistic. The
corrected resampled t-test of Nadeau & Bengio (2003, *Inference for the Generalization
Error*, Machine Learning 52:239) inflates the variance by ``n_test / n_train``; it lives
in :func:`brainmaps.evaluation.statistics.corrected_resampled_ttest`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from brainmaps.evaluation.statistics import corrected_resampled_ttest
from brainmaps.exceptions import ConfigError

__all__ = ["compare_models", "format_comparison"]

#: Columns summarised in the comparison, and the per-fold score tested, per task.
SUMMARY = {
    "classification": (("accuracy", "balanced_accuracy", "roc_auc"), "accuracy"),
    "regression": (
        ("mae", "rmse", "r", "r2", "mae_corrected", "r_gap_y", "r_gap_y_corrected"),
        "mae",
    ),
}
#: Regression: the predict-the-training-mean MAE, listed after the models' own metrics.
_MEAN_PREDICTOR = "mae_mean_predictor"
_LABELS = {
    "balanced_accuracy": "balanced acc.",
    "roc_auc": "AUC",
    "r2": "R²",
    "mae_corrected": "MAE corr.",
    "r_gap_y": "r(gap,y)",
    "r_gap_y_corrected": "r(gap,y) corr.",
    "mae_mean_predictor": "MAE mean pred.",
}


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
        ``<metric>_std`` for accuracy, balanced accuracy and AUC (regression: MAE, RMSE,
        r, R², and after the bias correction of each fold -- MAE corrected, the
        correlation of the gap with the target before and after, and the MAE of
        predicting the training mean; NaN for a model without them, e.g. an older run),
        and ``t`` and ``p`` of the corrected resampled t-test of the model against
        ``reference`` on per-fold accuracy (MAE: positive ``t``, the model's MAE is
        higher).
    """
    if task not in SUMMARY:
        raise ConfigError(f"task must be one of {tuple(SUMMARY)}, got {task!r}.")
    columns, tested = SUMMARY[task]
    if task == "regression":
        columns = (*columns, _MEAN_PREDICTOR)
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
