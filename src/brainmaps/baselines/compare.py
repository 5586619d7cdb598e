"""One table comparing the CNN with the baselines on identical folds, with a paired test.

Differences between models evaluated by cross-validation are not independent across
folds (the training parts overlap), so a plain paired t-test is too optimistic. The
corrected resampled t-test of Nadeau & Bengio (2003, *Inference for the Generalization
Error*, Machine Learning 52:239) inflates the variance by ``n_test / n_train``; it lives
in :func:`brainmaps.evaluation.statistics.corrected_resampled_ttest`.

With a repeated cross-validation (``training.repeats = R > 1``) the per-fold tables carry a
``repeat`` column and every model is scored on the same R x k (repeat, fold) pairs; the
summaries and the test then pool all J = R k folds, which is the corrected repeated
k-fold cv test of Bouckaert & Frank (2004, PAKDD, LNAI 3056:3):
``t = mean(d) / sqrt((1/J + n_test/n_train) var(d))`` on J - 1 degrees of freedom
(:func:`brainmaps.evaluation.statistics.corrected_repeated_kfold_ttest`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from brainmaps.evaluation.statistics import corrected_resampled_ttest, win_fraction
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
    """Fold rows indexed by ``fold`` (``<repeat>/<fold>`` with a ``repeat`` column)."""
    rows = table[~table["fold"].astype(str).isin(("mean", "std"))].copy()
    key = rows["fold"].astype(str)
    if "repeat" in rows:
        key = rows["repeat"].astype(str) + "/" + key
        rows = rows.drop(columns="repeat")
    rows["fold"] = key
    if rows["fold"].duplicated().any():
        raise ConfigError(f"per-fold metrics of {model!r} list a fold twice.")
    return rows.set_index("fold")


def _repeats(per_fold: Mapping[str, pd.DataFrame]) -> int | None:
    """Number of repeats of the tables that have a ``repeat`` column (None: none has)."""
    found = {
        pd.Series(t["repeat"]).astype(str)[~t["fold"].astype(str).isin(("mean", "std"))].nunique()
        for t in per_fold.values()
        if "repeat" in t
    }
    return max(found) if found else None


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
        ignored), e.g. a run's ``metrics.tsv``; with a ``repeat`` column too (a repeated
        cross-validation, e.g. ``metrics_repeats.tsv``), rows are the (repeat, fold)
        pairs. Every model must have the same folds.
    n_train, n_test : float
        Mean training and test sizes of the folds, over all repeats (for the corrected
        t-test).
    task : {"classification", "regression"}
        Classification tests per-fold accuracy; regression tests per-fold MAE.
    reference : str, optional
        The model the others are tested against (no test if absent from ``per_fold``).

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model``, ``n_folds`` (J: all folds of all repeats), with a
        ``repeat`` column in the input ``n_repeats`` after it, ``<metric>_mean`` and
        ``<metric>_std`` for accuracy, balanced accuracy and AUC (regression: MAE, RMSE,
        r, R², and after the bias correction of each fold -- MAE corrected, the
        correlation of the gap with the target before and after, and the MAE of
        predicting the training mean; NaN for a model without them, e.g. an older run),
        and ``t`` and ``p`` of the corrected resampled t-test of the model against
        ``reference`` on per-fold accuracy (MAE: positive ``t``, the model's MAE is
        higher), pooled over the J folds (the corrected repeated k-fold test with
        repeats), and ``reference_wins``: the fraction of the J folds on which the
        reference scores better than the model on that score (higher accuracy, lower
        MAE), a tie counting half (NaN for the reference itself and without one).
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
    n_repeats = _repeats(per_fold)
    rows = []
    for name, t in tables.items():
        row = {"model": name, "n_folds": len(t)}
        if n_repeats is not None:
            row["n_repeats"] = n_repeats
        for c in columns:
            values = pd.to_numeric(t[c], errors="coerce") if c in t else pd.Series(np.nan)
            row[f"{c}_mean"], row[f"{c}_std"] = values.mean(), values.std(ddof=1)
        row["t"] = row["p"] = row["reference_wins"] = np.nan
        if ref is not None and name != reference:
            a = pd.to_numeric(t[tested], errors="coerce").to_numpy(dtype=float)
            b = pd.to_numeric(ref.loc[t.index, tested], errors="coerce").to_numpy(dtype=float)
            # on the J pooled (repeat, fold) pairs: the corrected repeated k-fold test
            row["t"], row["p"] = corrected_resampled_ttest(a, b, n_train, n_test)
            higher = task == "classification"  # accuracy; regression: MAE, lower is better
            row["reference_wins"] = win_fraction(b, a, higher_is_better=higher)
        rows.append(row)
    return pd.DataFrame(rows)


def format_comparison(table: pd.DataFrame, digits: int = 3, reference: str = "cnn") -> str:
    """Render :func:`compare_models` output as aligned text (``mean ± std`` cells).

    The t and p columns are those of the test against ``reference``; ``<reference> wins``
    is the fraction of folds it scores better on (ties half); with repeats a first line
    says over how many folds the table pools.
    """
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    header = ["model", *(_LABELS.get(m, m.replace("_", " ")) for m in metrics)]
    header += [f"t vs {reference}", "p"]
    wins = "reference_wins" in table
    if wins:
        header.append(f"{reference} wins")
    rows = [header]
    for _, r in table.iterrows():
        cells = [str(r["model"])]
        cells += [_pm(r[f"{m}_mean"], r[f"{m}_std"], digits) for m in metrics]
        cells += [_num(r["t"], 2), _num(r["p"], 3)]
        if wins:
            cells.append(_num(r["reference_wins"], 2))
        rows.append(cells)
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if j == 0 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    text = "\n".join(line.rstrip() for line in lines)
    if "n_repeats" in table and len(table) and pd.notna(table["n_repeats"].iloc[0]):
        n_rep, n_folds = int(table["n_repeats"].iloc[0]), int(table["n_folds"].iloc[0])
        text = (
            f"{n_rep} repeats x {n_folds // max(n_rep, 1)} folds = {n_folds} folds pooled "
            "(corrected repeated k-fold t-test, Bouckaert & Frank 2004)\n" + text
        )
    return text


def _num(value, digits: int) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _pm(mean, std, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return "nan"
    std_text = "nan" if std is None or pd.isna(std) else f"{float(std):.{digits}f}"
    return f"{float(mean):.{digits}f} ± {std_text}"
