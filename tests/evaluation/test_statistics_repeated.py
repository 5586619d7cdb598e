"""The corrected repeated k-fold t-test (Bouckaert & Frank 2004) and the win fraction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainmaps.evaluation.statistics import (
    corrected_repeated_kfold_ttest,
    corrected_resampled_ttest,
    win_fraction,
)
from brainmaps.exceptions import ShapeError

# R = 2 repeats of k = 3 folds; differences d = a - b =
#   repeat 0: 0.10, 0.00, 0.20    repeat 1: 0.05, -0.05, 0.10
A = np.array([[0.80, 0.70, 0.90], [0.75, 0.65, 0.80]])
B = np.array([[0.70, 0.70, 0.70], [0.70, 0.70, 0.70]])


def test_known_answer_two_repeats_of_three_folds():
    # by hand: mean(d) = 0.40 / 6 = 1/15; sum(d^2) = 0.0650, so
    # var(d) = (0.0650 - 6 / 15^2) / 5 = 23/3000; with n_test / n_train = 10 / 20 = 1/2,
    # t = (1/15) / sqrt((1/6 + 1/2) * 23/3000) = (1/15) / sqrt(23/4500) = sqrt(20/23)
    t, p = corrected_repeated_kfold_ttest(A, B, n_train=20, n_test=10)
    assert t == pytest.approx(math.sqrt(20 / 23), rel=1e-12)  # 0.932505
    # two-sided p of Student's t with R k - 1 = 5 degrees of freedom at sqrt(20/23)
    assert p == pytest.approx(0.3938797, abs=1e-6)
    # the uncorrected paired t-test would claim twice the t: (1/15) / sqrt(23/3000 / 6)
    assert math.sqrt(80 / 23) == pytest.approx(2 * t)


def test_it_is_the_resampled_test_on_the_pooled_folds():
    pooled = corrected_resampled_ttest(A.ravel(), B.ravel(), 20, 10)
    assert corrected_repeated_kfold_ttest(A, B, 20, 10) == pooled
    assert corrected_repeated_kfold_ttest(A.ravel(), B.ravel(), 20, 10) == pooled
    # the pairing is per (repeat, fold): pairing other folds gives another test
    other = B + np.array([[0.0, 0.1, 0.0], [0.0, 0.0, 0.0]])
    assert corrected_repeated_kfold_ttest(A, other, 20, 10) != corrected_repeated_kfold_ttest(
        A[::-1], other, 20, 10
    )


def test_more_repeats_of_the_same_differences_narrow_the_test():
    one = corrected_repeated_kfold_ttest(A[:1], B[:1], 20, 10)
    stacked = corrected_repeated_kfold_ttest(np.vstack([A[:1]] * 4), np.vstack([B[:1]] * 4), 20, 10)
    # same mean and nearly the same variance; 1/J shrinks, n_test/n_train stays: the
    # correction keeps t from growing like sqrt(J)
    assert one[0] < stacked[0] < one[0] * math.sqrt(4)


def test_shape_errors():
    with pytest.raises(ShapeError, match="one shape"):
        corrected_repeated_kfold_ttest(A, B[:, :2], 20, 10)
    with pytest.raises(ShapeError, match="one shape"):
        corrected_repeated_kfold_ttest(A[None], B[None], 20, 10)


def test_win_fraction_counts_ties_half():
    # d: 0.10, 0.00, 0.20, 0.05, -0.05, 0.10 -> 4 wins, 1 tie, 1 loss
    assert win_fraction(A, B) == pytest.approx(4.5 / 6)
    assert win_fraction(B, A) == pytest.approx(1.5 / 6)
    assert win_fraction(A, B, higher_is_better=False) == pytest.approx(1.5 / 6)
    assert win_fraction([1.0, np.nan], [0.0, 0.0]) == 1.0  # non-finite folds left out
    assert math.isnan(win_fraction([np.nan], [0.0]))
    with pytest.raises(ShapeError):
        win_fraction([1.0, 2.0], [1.0])


def test_win_fraction_ties_scores_read_back_from_a_table():
    exact = 11 / 14
    written = float(f"{exact:.6g}")  # as write_tsv stores it
    assert written != exact
    assert win_fraction([written, 0.9], [exact, 0.8]) == pytest.approx(0.75)
    assert win_fraction([written, 0.9], [exact, 0.8], rtol=0) == pytest.approx(0.5)
