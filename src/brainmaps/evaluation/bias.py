"""Regression to the mean in brain-age predictions, and its correction.

A model that predicts age from images shrinks toward the training mean: the young are
predicted older and the old younger, so the brain-age gap (prediction minus age) correlates
negatively with age (Smith et al. 2019; de Lange & Cole 2020). The usual correction fits
the line ``prediction = a + b * age`` on predictions of subjects the model did not train
on, and removes it: ``corrected = prediction - (a + b * age) + age``, so the corrected gap
``corrected - age`` is uncorrelated with age on those subjects. Here the line is fitted on
each training fold's own inner validation predictions and applied to that fold's test
subjects, never fitted on the subjects it corrects.

Torch-free: NumPy only. The same functions serve any regression target, not only age.
"""

from __future__ import annotations

import numpy as np

from brainmaps.exceptions import ShapeError

__all__ = ["MIN_FIT", "apply_bias", "bias_metrics", "fit_bias"]

#: Fewest validation subjects (with distinct targets) a line is fitted on.
MIN_FIT = 3


def _pair(y, pred, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    pred = np.asarray(pred, dtype=float).ravel()
    if len(y) != len(pred):
        raise ShapeError(f"{what}: {len(y)} targets but {len(pred)} predictions.")
    return y, pred


def fit_bias(y, pred) -> tuple[float, float] | None:
    """The line ``pred = intercept + slope * y`` by least squares.

    Parameters
    ----------
    y, pred : array-like of float
        True values and out-of-sample predictions (e.g. a fold's inner validation set).

    Returns
    -------
    (intercept, slope) or None
        ``None`` when fewer than :data:`MIN_FIT` subjects or their targets are all equal
        (no line can be fitted): the predictions are then left uncorrected.
    """
    y, pred = _pair(y, pred, "fit_bias")
    ok = np.isfinite(y) & np.isfinite(pred)
    y, pred = y[ok], pred[ok]
    if len(y) < MIN_FIT or np.ptp(y) == 0:
        return None
    slope, intercept = np.polyfit(y, pred, 1)
    return float(intercept), float(slope)


def apply_bias(y, pred, intercept: float, slope: float) -> np.ndarray:
    """``pred - (intercept + slope * y) + y``: the prediction with the fitted trend removed.

    The corrected gap ``apply_bias(...) - y`` equals ``pred - (intercept + slope * y)``, the
    residual from the fitted line (de Lange & Cole 2020).
    """
    y, pred = _pair(y, pred, "apply_bias")
    return pred - (intercept + slope * y) + y


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def bias_metrics(y, pred, corrected=None, train_mean: float | None = None) -> dict[str, float]:
    """What the correction did, for one fold's test subjects.

    Parameters
    ----------
    y, pred : array-like of float
    corrected : array-like of float, optional
        :func:`apply_bias` of them (NaN where uncorrected).
    train_mean : float, optional
        The training fold's mean target: the prediction of the predict-the-mean baseline.

    Returns
    -------
    dict
        ``r_gap_y`` (correlation of the gap with the target), and when given
        ``mae_corrected``, ``r_gap_y_corrected`` and ``mae_mean_predictor``.
    """
    y, pred = _pair(y, pred, "bias_metrics")
    out = {"r_gap_y": _corr(pred - y, y)}
    if corrected is not None:
        y, corrected = _pair(y, corrected, "bias_metrics")
        ok = np.isfinite(corrected)
        out["mae_corrected"] = float(np.mean(np.abs(corrected[ok] - y[ok]))) if ok.any() else np.nan
        out["r_gap_y_corrected"] = _corr(corrected - y, y)
    if train_mean is not None and np.isfinite(train_mean):
        out["mae_mean_predictor"] = float(np.mean(np.abs(y - train_mean)))
    return out
