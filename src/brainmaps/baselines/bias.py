"""Age-bias correction of the regression baselines, fitted inside each training fold.

A regression baseline shrinks toward the training mean as a CNN does, so its gap
(prediction minus target) correlates negatively with the target. As for a CNN run
(:mod:`brainmaps.evaluation.bias`), the line ``prediction = a + b * y`` is fitted on
out-of-sample predictions of training subjects and removed from the fold's test
predictions; the test subjects never enter the line. The out-of-sample predictions are

* ``"val"``: those of the fold's inner validation subjects (the CNN run's ``val`` rows).
  As the CNN, the baseline is then fitted (grid search and refit, feature scaling
  included) on the fold's ``train`` rows only, and that one model predicts both the
  validation and the test subjects, so the line describes the shrinkage of the model it
  corrects;
* ``"inner_cv"`` (no, or fewer than three, validation subjects): the inner
  cross-validation predictions of every training row (the grid search's inner folds)
  with the chosen hyper-parameters; the test predictions are those of the model refitted
  on all training rows, which shrinks a little less than the inner models, so the line
  slightly over-corrects (measured in ``tests/baselines/test_regression_baselines.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import cross_val_predict
from threadpoolctl import threadpool_limits

from brainmaps.evaluation.bias import MIN_FIT, fit_bias
from brainmaps.exceptions import BrainmapsWarning, DataLeakageError

__all__ = ["LOW_SLOPE", "bias_line", "inner_cv_predictions", "split_validation"]

#: Slope of prediction on target below which a fold's warning says the model learnt little.
LOW_SLOPE = 0.2


def split_validation(train: np.ndarray, rows, k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows outer fold ``k`` fits on, and its validation rows (None if too few).

    Parameters
    ----------
    train : numpy.ndarray
        The fold's training rows.
    rows : array-like of int or None
        The fold's validation rows (e.g. ``RunFolder.indices(k, "val")``).
    k : int

    Returns
    -------
    fit : numpy.ndarray
        ``train`` without the validation rows (all of ``train`` when they are None).
    val : numpy.ndarray or None
        The validation rows, or None when fewer than
        :data:`~brainmaps.evaluation.bias.MIN_FIT`.

    Raises
    ------
    DataLeakageError
        If a validation row is not a training row of the fold (it would be a test row).
    """
    if rows is None:
        return train, None
    rows = np.asarray(rows, dtype=np.int64)
    inside = np.isin(rows, train)
    if not inside.all():
        raise DataLeakageError(
            f"bias_rows: expected the validation rows of fold {k} among its training rows, "
            f"found {int((~inside).sum())} outside them (rows {rows[~inside][:5].tolist()}); "
            "give each fold's inner validation rows (e.g. RunFolder.indices(k, 'val'))."
        )
    if len(np.unique(rows)) < MIN_FIT:
        return train, None
    return train[~np.isin(train, rows)], np.unique(rows)


def inner_cv_predictions(estimator, x_train, y_train, inner) -> np.ndarray:
    """Out-of-sample predictions of every training row by the inner folds' models."""
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.filterwarnings("ignore", category=UserWarning)  # convergence chatter
        return np.asarray(cross_val_predict(clone(estimator), x_train, y_train, cv=inner), float)


def bias_line(y, pred, source: str, k: int, name: str = "model") -> dict | None:
    """The bias line of outer fold ``k`` from out-of-sample predictions, in target units.

    Returns
    -------
    dict or None
        ``intercept``, ``slope``, ``n`` (subjects the line is fitted on) and ``source``
        (``"val"`` or ``"inner_cv"``); None when no line can be fitted (see
        :func:`~brainmaps.evaluation.bias.fit_bias`). A slope below :data:`LOW_SLOPE`
        warns that the corrected predictions mostly give back the targets.
    """
    line = fit_bias(y, pred)
    if line is None:
        return None
    if line[1] < LOW_SLOPE:
        warnings.warn(
            f"{name}, fold {k}: the out-of-sample predictions of training subjects hardly "
            f"follow the target (slope {line[1]:.2f} of prediction on target): the model has "
            "learnt little of it, and the bias-corrected predictions mostly give back the "
            "true values; do not read their MAE as accuracy.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return {"intercept": line[0], "slope": line[1], "n": len(np.asarray(y)), "source": source}
