"""Nested cross-validation shared by every baseline.

The outer folds are given (those of a CNN run, or any split); inside each outer training
part a grid search picks the hyper-parameters with an inner cross-validation that is
grouped by subject and stratified by label. Nothing fitted (imputer, scaler, kernel
statistics, hyper-parameters) ever sees the outer test rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from brainmaps.baselines.bias import bias_line, inner_cv_predictions, split_validation
from brainmaps.evaluation.bias import apply_bias, bias_metrics
from brainmaps.evaluation.metrics import (
    classification_metrics,
    regression_metrics,
    summarize_folds,
)
from brainmaps.evaluation.splitters import make_folds
from brainmaps.exceptions import CohortError, ConfigError, DataLeakageError, ShapeError
from brainmaps.tasks import get_task

__all__ = [
    "TASKS",
    "BaselineResult",
    "as_splits",
    "check_rows",
    "fold_metrics",
    "inner_splits",
    "nested_cv",
    "table_features",
]

#: Accepted values of ``task``.
TASKS = ("classification", "regression")
_SCORING = {"classification": "balanced_accuracy", "regression": "neg_mean_absolute_error"}

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class BaselineResult:
    """Out-of-fold predictions and per-fold metrics of one baseline.

    Attributes
    ----------
    name : str
        The model name (``"svm"``, ``"lr"``, ...).
    task : {"classification", "regression"}
    fold : numpy.ndarray of int, shape (n,)
        Outer fold in which each row was tested (``-1``: never tested).
    outputs : numpy.ndarray
        Class probabilities, shape (n, n_classes), or predicted values, shape (n,);
        NaN for rows never tested.
    metrics : pandas.DataFrame
        ``fold``, ``n_test`` and the metrics of
        :func:`~brainmaps.evaluation.metrics.classification_metrics` (or
        :func:`~brainmaps.evaluation.metrics.regression_metrics`) per fold, then ``mean``
        and ``std`` rows.
    best_params : tuple of dict
        The hyper-parameters chosen by the inner grid search in each fold.
    estimators : tuple
        The refitted best estimator of each fold.
    importances : pandas.DataFrame or None
        Feature importances (see :func:`~brainmaps.baselines.plots.importance_table`).
    corrected, train_mean : numpy.ndarray or None
        Regression: the bias-corrected predictions (NaN where no line could be fitted)
        and the mean target of each row's training fold (see
        :mod:`brainmaps.baselines.bias`); None for classification.
    bias : tuple of (dict or None)
        Regression: the bias line of each fold (``intercept``, ``slope``, ``n``,
        ``source``).
    """

    name: str
    task: str
    fold: np.ndarray
    outputs: np.ndarray
    metrics: pd.DataFrame
    best_params: tuple[dict, ...]
    estimators: tuple
    importances: pd.DataFrame | None = None
    corrected: np.ndarray | None = None
    train_mean: np.ndarray | None = None
    bias: tuple = ()


def _index_array(values, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ConfigError(
            f"{what} must be a 1-D array of row indices, got {arr.dtype} of shape {arr.shape}."
        )
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ConfigError(f"{what} holds indices outside 0..{n - 1}; folds do not fit the data.")
    return arr


def _per_row_folds(folds, n: int) -> list[Split] | None:
    """Splits from one fold number per row, or None if ``folds`` is a list of pairs."""
    scalars = isinstance(folds, Sequence) and len(folds) > 0 and np.isscalar(folds[0])
    if not (isinstance(folds, np.ndarray | pd.Series) or scalars):
        return None
    arr = np.asarray(folds)
    if arr.ndim != 1:
        return None
    if len(arr) != n or arr.dtype.kind not in "iu":
        raise ConfigError(
            f"folds as one fold number per row must be {n} integers, got {arr.dtype} of "
            f"length {len(arr)}; pass make_folds(...) output or a list of (train, test) pairs."
        )
    rows = np.arange(n)
    return [(rows[arr != k], rows[arr == k]) for k in np.unique(arr)]


def as_splits(folds, n_samples: int) -> list[Split]:
    """Normalise outer folds to a list of ``(train_idx, test_idx)`` pairs.

    Parameters
    ----------
    folds : array-like of int or sequence of (array, array)
        Either the test fold of every row (as returned by
        :func:`~brainmaps.evaluation.splitters.make_folds`) or one
        ``(train_idx, test_idx)`` pair of row indices per fold (e.g.
        ``RunFolder.indices(k, "fit"), RunFolder.indices(k, "test")``).
    n_samples : int
        Number of rows of the data.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)

    Raises
    ------
    ConfigError
        If a fold is malformed, a row is both trained on and tested in a fold, or two
        test sets overlap.
    """
    splits = _per_row_folds(folds, n_samples)
    if splits is None:
        splits = [
            (_index_array(tr, n_samples, f"fold {k} train"), _index_array(te, n_samples, "test"))
            for k, (tr, te) in enumerate(folds)
        ]
    if len(splits) < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {len(splits)}.")
    seen = np.zeros(n_samples, dtype=bool)
    for k, (train, test) in enumerate(splits):
        if len(train) == 0 or len(test) == 0 or np.intersect1d(train, test).size:
            raise ConfigError(
                f"fold {k} must have non-empty, disjoint train and test rows; got "
                f"{len(train)} train and {len(test)} test rows sharing "
                f"{np.intersect1d(train, test).size}."
            )
        if seen[test].any():
            raise ConfigError(f"fold {k} tests rows already tested in an earlier fold.")
        seen[test] = True
    return splits


def _check_groups(groups, splits: list[Split], n: int) -> np.ndarray:
    groups = np.arange(n).astype(str) if groups is None else np.asarray(groups).astype(str)
    if groups.shape != (n,):
        raise ShapeError(f"groups must hold one subject per row ({n}), got shape {groups.shape}.")
    for k, (train, test) in enumerate(splits):
        shared = np.intersect1d(groups[train], groups[test])
        if shared.size:
            raise DataLeakageError(
                f"fold {k} has subject(s) {', '.join(shared[:5])} in both its training and "
                "test rows; give every row of a subject the same fold."
            )
    return groups


def _check_target(y, task: str) -> np.ndarray:
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}.")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ShapeError(f"y must be one-dimensional (one target per row), got {y.shape}.")
    if not get_task(task).is_classification:
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise CohortError("y holds NaN or infinite values; drop those rows first.")
        return y
    if y.dtype.kind not in "iub" or (y.size and y.min() < 0):
        raise ConfigError(
            f"classification needs y as class indices 0..K-1, got {y.dtype} values like "
            f"{y[:3].tolist()}; encode the classes as integers (Cohort.labels does)."
        )
    return y.astype(np.int64)


def inner_splits(groups, y, task: str, n_folds: int, seed: int) -> list[Split]:
    """Inner folds of an outer training part, grouped by subject and stratified.

    The number of folds is lowered to the subject count (classification: to the
    subject count of the smallest class) when that is smaller.
    """
    groups = np.asarray(groups).astype(str)
    pairs = pd.DataFrame({"g": groups, "y": y}).drop_duplicates("g")
    limit = (
        len(pairs) if not get_task(task).is_classification else int(pairs["y"].value_counts().min())
    )
    k = min(int(n_folds), limit)
    if k < 2 or (get_task(task).is_classification and pairs["y"].nunique() < 2):
        raise CohortError(
            f"an outer training part has too few subjects for an inner grid search "
            f"({len(pairs)} subjects, smallest class {limit}); use fewer outer folds or more "
            "subjects."
        )
    fold = make_folds(groups, y, n_folds=k, seed=seed, task=task)
    rows = np.arange(len(groups))
    return [(rows[fold != j], rows[fold == j]) for j in range(k)]


def fold_metrics(task: str, y, outputs, fold, corrected=None, train_mean=None) -> pd.DataFrame:
    """Per-fold metrics of out-of-fold outputs, then ``mean`` and ``std`` rows.

    Parameters
    ----------
    task : {"classification", "regression"}
    y : array-like, shape (n,)
        Class indices or values.
    outputs : array-like
        Class probabilities (n, n_classes) or predictions (n,).
    fold : array-like of int, shape (n,)
        Test fold of each row (rows with ``-1`` are ignored).
    corrected, train_mean : array-like of float, shape (n,), optional
        Regression: bias-corrected predictions and the training mean of each row's fold;
        with them the metrics gain those of
        :func:`~brainmaps.evaluation.bias.bias_metrics` (as a CNN run's).

    Returns
    -------
    pandas.DataFrame
        Columns ``fold``, ``n_test`` and the metrics, as in a run's ``metrics.tsv``.
    """
    fold = np.asarray(fold)
    rows = []
    for k in np.unique(fold[fold >= 0]):
        sel = fold == k
        if not get_task(task).is_classification:
            y_k, pred_k = np.asarray(y, dtype=float)[sel], np.asarray(outputs)[sel]
            m = regression_metrics(y_k, pred_k)
            if corrected is not None:
                mean = None if train_mean is None else float(np.asarray(train_mean)[sel][0])
                m.update(bias_metrics(y_k, pred_k, np.asarray(corrected)[sel], mean))
        else:
            m = classification_metrics(np.asarray(y)[sel], np.asarray(outputs)[sel])
        rows.append({"fold": str(k), "n_test": int(sel.sum()), **m})
    return summarize_folds(pd.DataFrame(rows))


@dataclass(frozen=True)
class _Search:
    estimator: object
    param_grid: dict | Callable[[int], dict]
    task: str
    inner_folds: int
    seed: int
    n_jobs: int


def _fit_fold(search: _Search, x_train, y_train, groups_train):
    """Grid search on one outer training part; return the refitted search."""
    splits = inner_splits(groups_train, y_train, search.task, search.inner_folds, search.seed)
    grid = search.param_grid
    if callable(grid):
        grid = grid(min(len(tr) for tr, _ in splits))
    gs = GridSearchCV(
        search.estimator,
        grid,
        scoring=_SCORING[search.task],
        cv=splits,
        n_jobs=search.n_jobs,
        refit=True,
        error_score="raise",
    )
    # The many small fits are much slower with multi-threaded BLAS (threads contend on a
    # busy machine); parallelism comes from n_jobs instead.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true")
        gs.fit(x_train, y_train)
    return gs


def _predict(gs, x_test, task: str, n_classes: int) -> np.ndarray:
    """Predictions, or class probabilities in the columns of the classes seen in training.

    Estimators without ``predict_proba`` (SVMs) give the logistic (binary) or softmax
    (multiclass) of their decision function: a monotone score whose argmax is the
    predicted class, not a calibrated probability.
    """
    if not get_task(task).is_classification:
        return np.asarray(gs.predict(x_test), dtype=float)
    if hasattr(gs, "predict_proba"):
        fitted = gs.predict_proba(x_test)
    else:
        scores = np.asarray(gs.decision_function(x_test), dtype=float)
        if scores.ndim == 1:
            scores = np.column_stack([-scores, scores]) / 2.0
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        fitted = scores / scores.sum(axis=1, keepdims=True)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, np.asarray(gs.best_estimator_.classes_, dtype=int)] = fitted
    return proba


def nested_cv(
    estimator,
    param_grid: dict | Callable[[int], dict],
    y,
    folds,
    features: Callable[[np.ndarray, np.ndarray], tuple],
    *,
    groups=None,
    task: str = "classification",
    inner_folds: int = 5,
    random_state: int = 0,
    n_jobs: int = 1,
    name: str = "model",
    progress: bool = False,
    bias_rows: Sequence | None = None,
) -> BaselineResult:
    """Cross-validate a scikit-learn estimator with a grid search nested in each fold.

    Parameters
    ----------
    estimator : sklearn estimator
        Unfitted; cloned for every fit.
    param_grid : dict or callable
        Grid of :class:`~sklearn.model_selection.GridSearchCV`, or a function of the
        smallest inner training size returning it (e.g. to bound ``n_neighbors``).
    y : array-like, shape (n,)
        Class indices 0..K-1 (classification) or values (regression).
    folds : array-like or sequence of (train, test)
        Outer folds (see :func:`as_splits`).
    features : callable
        ``features(train_idx, test_idx) -> (X_train, X_test)``: builds the inputs of one
        fold from its training rows only (a slice of a table, or a kernel).
    groups : array-like of str, shape (n,), optional
        Subject of each row: inner folds never split a subject, and a subject found in
        both the training and test rows of an outer fold raises
        :class:`~brainmaps.exceptions.DataLeakageError`.
    task : {"classification", "regression"}
        Regression targets are standardised with the training part's mean and standard
        deviation for fitting; predictions are returned in the original units.
    inner_folds : int
        Inner folds of the grid search (lowered when a class has fewer subjects).
    random_state : int
        Seeds the inner folds.
    n_jobs : int
        Parallel fits of the grid search.
    name : str
        Name stored in the result.
    progress : bool
        Show a progress bar over the folds.
    bias_rows : sequence of array-like of int, optional
        Regression: per outer fold, validation rows among its training rows, e.g. the
        CNN run's ``val`` rows: the fold is then fitted on its other training rows and
        its bias line on their predictions; a fold without (three of) them fits the line
        on inner cross-validation predictions (see :mod:`brainmaps.baselines.bias`).

    Returns
    -------
    BaselineResult
    """
    y = _check_target(y, task)
    n = len(y)
    splits = as_splits(folds, n)
    groups = _check_groups(groups, splits, n)
    n_classes = int(y.max()) + 1 if get_task(task).is_classification else 0
    outputs = np.full((n, n_classes) if n_classes else n, np.nan)
    fold = np.full(n, -1, dtype=np.int64)
    search = _Search(estimator, param_grid, task, inner_folds, random_state, n_jobs)
    regression = not n_classes
    corrected, train_mean = (np.full(n, np.nan), np.full(n, np.nan)) if regression else (None,) * 2
    params, estimators, lines = [], [], []
    for k, (train, test) in enumerate(tqdm(splits, desc=name, disable=not progress)):
        rows = bias_rows[k] if regression and bias_rows is not None else None
        fit, val = split_validation(train, rows, k)  # val: fit the bias line, as the CNN's
        x_train, x_test = features(fit, test if val is None else np.concatenate([val, test]))
        y_train, shift, scale = y[fit], 0.0, 1.0
        if regression:
            shift, scale = float(y_train.mean()), float(y_train.std()) or 1.0
            y_train = (y_train - shift) / scale
        gs = _fit_fold(search, x_train, y_train, groups[fit])
        pred = _predict(gs, x_test, task, n_classes) * scale + shift
        outputs[test] = pred if val is None else pred[len(val) :]
        fold[test] = k
        params.append(dict(gs.best_params_))
        estimators.append(gs.best_estimator_)
        if regression:  # the fold's bias line, from out-of-sample training predictions
            if val is not None:
                line = bias_line(y[val], pred[: len(val)], "val", k, name)
            else:
                inner = inner_cv_predictions(gs.best_estimator_, x_train, y_train, gs.cv)
                line = bias_line(y[fit], inner * scale + shift, "inner_cv", k, name)
            lines.append(line)
            train_mean[test] = shift
            if line is not None:
                corrected[test] = apply_bias(
                    y[test], outputs[test], line["intercept"], line["slope"]
                )
    metrics = fold_metrics(task, y, outputs, fold, corrected, train_mean)
    return BaselineResult(
        name, task, fold, outputs, metrics, tuple(params), tuple(estimators), None,
        corrected, train_mean, tuple(lines),
    )  # fmt: skip


def table_features(x) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """Return ``features(train, test)`` slicing the rows of a table or array ``x``."""
    x = x.to_numpy(dtype=np.float64) if isinstance(x, pd.DataFrame) else np.asarray(x)
    if x.ndim != 2:
        raise ShapeError(f"features must be a 2-D table (rows x features), got shape {x.shape}.")
    return lambda train, test: (x[train], x[test])


def check_rows(x, y: Sequence) -> None:
    """Raise :class:`ShapeError` unless ``x`` has one row per target."""
    if len(x) != len(y):
        raise ShapeError(
            f"features have {len(x)} rows but y has {len(y)}; give one row per sample, in "
            "the same order."
        )
