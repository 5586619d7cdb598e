"""Per-feature comparison of two groups with Benjamini-Hochberg FDR control.

Torch-free. Kan et al. (2020, appendix) compared every first-layer filter of their CNN
between men and women (mean activation and entropy of the feature map) with a t-test
at p < 0.05 and counted how many filters are larger in each group, without correcting
for the 32 tests; :func:`compare_groups` adds the Benjamini-Hochberg correction and a
rank test, and :func:`count_larger` gives the counts. The functions take any
``(n_subjects, n_features)`` array, so they serve other per-feature comparisons too.
:func:`benjamini_hochberg` lives in :mod:`brainmaps.evaluation.statistics` and is
re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from brainmaps.evaluation.statistics import benjamini_hochberg
from brainmaps.exceptions import ConfigError, ShapeError

__all__ = ["TESTS", "benjamini_hochberg", "compare_groups", "count_larger"]

#: Tests accepted by :func:`compare_groups`.
TESTS = ("mannwhitney", "ttest")


def _two_groups(
    groups: Sequence | np.ndarray, n: int, classes: Sequence | None
) -> tuple[np.ndarray, tuple]:
    labels = np.asarray(groups)
    if labels.ndim != 1 or len(labels) != n:
        raise ShapeError(
            f"groups must hold one label per row of values ({n}), got shape {labels.shape}."
        )
    found = tuple(pd.unique(labels).tolist())
    if classes is None:
        classes = tuple(sorted(found, key=str))
    classes = tuple(classes)
    if len(classes) != 2 or set(found) - set(classes):
        raise ConfigError(
            f"groups must hold exactly two labels (classes={classes!r}), found {found!r}; "
            "compare two groups at a time."
        )
    counts = [int(np.sum(labels == c)) for c in classes]
    if min(counts) < 2:
        raise ConfigError(
            f"each group needs at least 2 subjects, got {dict(zip(classes, counts, strict=True))}."
        )
    return labels, classes


def _test(a: np.ndarray, b: np.ndarray, test: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Statistic, p-value and direction (+1: a larger, -1: b larger) per column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if test == "ttest":
            res = stats.ttest_ind(a, b, axis=0)
            stat = np.asarray(res.statistic, dtype=np.float64)
            sign = np.sign(np.nan_to_num(stat))
        else:
            res = stats.mannwhitneyu(a, b, alternative="two-sided", axis=0)
            stat = np.asarray(res.statistic, dtype=np.float64)
            sign = np.sign(stat - len(a) * len(b) / 2.0)
    p = np.asarray(res.pvalue, dtype=np.float64)
    # Constant, identical groups (e.g. a filter that is never active) give NaN: no evidence.
    p = np.where(np.isfinite(p), p, 1.0)
    return stat, p, sign


def compare_groups(
    values: np.ndarray,
    groups: Sequence | np.ndarray,
    test: str = "mannwhitney",
    alpha: float = 0.05,
    *,
    classes: Sequence | None = None,
) -> pd.DataFrame:
    """Compare two groups feature by feature, with Benjamini-Hochberg FDR control.

    Parameters
    ----------
    values : array-like, shape (n_subjects, n_features)
        One row per subject (e.g. the mean activation of every first-layer filter).
    groups : array-like, shape (n_subjects,)
        The group label of every row; exactly two distinct labels.
    test : {"mannwhitney", "ttest"}
        Two-sided Mann-Whitney U test (default; no normality assumption) or Student's
        two-sample t-test (equal variances, as Kan et al.).
    alpha : float
        FDR level: a feature is significant when its q-value is below ``alpha``.
    classes : sequence of 2 labels, optional
        Order of the groups (A, B); default: the sorted labels.

    Returns
    -------
    pandas.DataFrame
        One row per feature with columns ``filter`` (column index), ``statistic`` (U of
        group A, or t of A minus B), ``p``, ``q`` (BH-adjusted), ``mean_<A>``,
        ``mean_<B>``, ``larger_in`` (the group the test finds larger: for Mann-Whitney
        U > n_A n_B / 2 means A; for the t-test t > 0 means A; ``""`` on an exact tie)
        and ``significant`` (``q < alpha``). Features that are constant and equal in
        both groups get ``p = 1``.

    Raises
    ------
    ShapeError
        If ``values`` is not 2D or ``groups`` does not match its rows.
    ConfigError
        On an unknown test, an ``alpha`` outside (0, 1), non-finite values, or groups
        that are not exactly two with at least 2 subjects each.
    """
    if test not in TESTS:
        raise ConfigError(f"test must be one of {TESTS}, got {test!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ConfigError(f"alpha must be a number in (0, 1), got {alpha!r}.")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"values must be 2D (n_subjects, n_features), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ConfigError("values hold NaN or infinite entries; remove or impute them first.")
    labels, (a, b) = _two_groups(groups, x.shape[0], classes)
    xa, xb = x[labels == a], x[labels == b]
    stat, p, sign = _test(xa, xb, test)
    q = benjamini_hochberg(p)
    larger = np.where(sign > 0, str(a), np.where(sign < 0, str(b), ""))
    return pd.DataFrame(
        {
            "filter": np.arange(x.shape[1]),
            "statistic": stat,
            "p": p,
            "q": q,
            f"mean_{a}": xa.mean(axis=0),
            f"mean_{b}": xb.mean(axis=0),
            "larger_in": larger,
            "significant": q < alpha,
        }
    )


def _mean_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith("mean_")]


def count_larger(df: pd.DataFrame) -> dict[str, int]:
    """How many significant features are larger in each group.

    Parameters
    ----------
    df : pandas.DataFrame
        A table from :func:`compare_groups` (or rows of several, e.g. all folds).

    Returns
    -------
    dict of str to int
        ``{"n_filters": ..., "n_significant": ..., "<A>": ..., "<B>": ...}`` where the
        group names come from the ``mean_<class>`` columns, in column order.

    Raises
    ------
    ConfigError
        If the table lacks the ``significant`` / ``larger_in`` / ``mean_<class>`` columns.
    """
    means = _mean_columns(df)
    if len(means) != 2 or not {"significant", "larger_in"} <= set(df.columns):
        raise ConfigError(
            "count_larger needs a compare_groups table (columns significant, larger_in and "
            f"two mean_<class> columns); got columns {list(df.columns)}."
        )
    sig = df["significant"].astype(bool).to_numpy()
    larger = df["larger_in"].astype(str).to_numpy()
    out = {"n_filters": len(df), "n_significant": int(sig.sum())}
    for col in means:
        name = str(col)[len("mean_") :]
        out[name] = int(np.sum(sig & (larger == name)))
    return out
