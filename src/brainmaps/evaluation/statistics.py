"""Statistical tests on cross-validated scores and many p-values (torch-free).

- :func:`corrected_resampled_ttest`: differences between models evaluated by
  cross-validation are not independent across folds (the training parts overlap), so a
  plain paired t-test is too optimistic. The corrected resampled t-test of Nadeau &
  Bengio (2003, *Inference for the Generalization Error*, Machine Learning 52:239)
  inflates the variance by ``n_test / n_train``.
- :func:`corrected_repeated_kfold_ttest`: the same test on the R x k folds of an R times
  repeated k-fold cross-validation (Bouckaert & Frank 2004), which is the corrected
  resampled t-test on the J = R * k pooled folds.
- :func:`win_fraction`: on how many paired folds one model beats the other.
- :func:`benjamini_hochberg`: false discovery rate control over many tests (e.g. one per
  first-layer filter, Kan et al. 2020, appendix, who did not correct for their 32 tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "benjamini_hochberg",
    "corrected_repeated_kfold_ttest",
    "corrected_resampled_ttest",
    "win_fraction",
]


def corrected_resampled_ttest(
    scores_a, scores_b, n_train: float, n_test: float
) -> tuple[float, float]:
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
        when the differences are all equal but non-zero (zero variance), or when a
        score is not finite.

    Raises
    ------
    ShapeError
        If the score vectors differ in shape, are not 1-D, or hold fewer than 2 folds.
    ConfigError
        If ``n_train`` or ``n_test`` is not positive.

    References
    ----------
    .. [1] C. Nadeau, Y. Bengio, "Inference for the generalization error", Machine
       Learning 52:239-281, 2003.
    .. [2] R. R. Bouckaert, E. Frank, "Evaluating the replicability of significance tests
       for comparing learning algorithms", PAKDD 2004.
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


def corrected_repeated_kfold_ttest(
    scores_a, scores_b, n_train: float, n_test: float
) -> tuple[float, float]:
    """Corrected repeated k-fold cv t-test of two models scored on the same R x k folds.

    Bouckaert & Frank (2004) test the ``J = R * k`` per-fold differences ``d_rk`` of an
    R times repeated k-fold cross-validation with
    ``t = mean(d) / sqrt((1 / (R k) + n_test / n_train) * var(d))`` (mean and ``var``,
    ddof=1, over all R x k folds) against Student's t with ``R k - 1`` degrees of freedom.
    That is :func:`corrected_resampled_ttest` on the pooled folds (``J = R k``), which
    this function calls after flattening; ``R = 1`` gives the plain corrected k-fold test.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (R, k) or (R * k,)
        Per-fold scores of the two models, repeat by repeat and fold by fold (the same
        (repeat, fold) at the same position in both).
    n_train, n_test : float
        Training and test set sizes (means over all R x k folds); for k-fold
        cross-validation ``n_test / n_train`` is about ``1 / (k - 1)``.

    Returns
    -------
    t, p : float
        As :func:`corrected_resampled_ttest` (``t > 0`` when ``a`` scores higher).

    Raises
    ------
    ShapeError
        If the two score arrays differ in shape or hold fewer than 2 folds in all.
    ConfigError
        If ``n_train`` or ``n_test`` is not positive.

    References
    ----------
    .. [1] R. R. Bouckaert, E. Frank, "Evaluating the replicability of significance tests
       for comparing learning algorithms", PAKDD 2004, LNAI 3056:3-12.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ShapeError(
            f"the repeated k-fold t-test needs two score arrays of one shape, (R, k) or "
            f"(R * k,), got {a.shape} and {b.shape}."
        )
    return corrected_resampled_ttest(a.ravel(), b.ravel(), n_train, n_test)


def win_fraction(scores_a, scores_b, *, higher_is_better: bool = True, rtol: float = 1e-6) -> float:
    """Fraction of paired folds on which model ``a`` scores better than model ``b``.

    A tie counts half, so ``win_fraction(a, b) + win_fraction(b, a) == 1``.

    Parameters
    ----------
    scores_a, scores_b : array-like of float, shape (J,) or (R, k)
        Per-fold scores of the two models on the same folds.
    higher_is_better : bool
        True for accuracy or AUC, False for an error such as MAE.
    rtol : float
        Scores closer than ``rtol`` times the larger of the two (in absolute value) tie:
        a score read back from a table written with 6 significant digits (``%.6g``)
        ties with the exact value it was written from.

    Returns
    -------
    float
        In ``[0, 1]``; NaN when no fold has both scores finite (folds where either is
        not finite are left out).

    Raises
    ------
    ShapeError
        If the score arrays differ in shape.
    """
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ShapeError(
            f"win_fraction needs two score arrays of one shape, got {a.shape}, {b.shape}."
        )
    a, b = a.ravel(), b.ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return float("nan")
    d = (a - b) * (1.0 if higher_is_better else -1.0)
    tie = np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))
    return float(((d > 0) & ~tie).sum() + 0.5 * tie.sum()) / a.size


def benjamini_hochberg(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) of independent tests.

    ``q_(i) = min_{j >= i} min(1, p_(j) * m / j)`` over the p-values sorted in increasing
    order, computed with :func:`scipy.stats.false_discovery_control` (``method="bh"``).

    Parameters
    ----------
    p : array-like of float
        P-values in ``[0, 1]``, any order.

    Returns
    -------
    numpy.ndarray of float64
        The q-values in the order of ``p``; ``q >= p`` and q is monotone in p.

    Raises
    ------
    ConfigError
        If a p-value is missing or outside ``[0, 1]``.

    References
    ----------
    .. [1] Y. Benjamini, Y. Hochberg, "Controlling the false discovery rate: a practical
       and powerful approach to multiple testing", J. R. Stat. Soc. B 57:289-300, 1995.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return p.copy()
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ConfigError(
            f"p-values must be finite and in [0, 1], got {p[:10]} ...; drop the tests "
            "without a p-value and pass p-values, not test statistics."
        )
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)
