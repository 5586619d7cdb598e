"""The corrected resampled t-test (Nadeau & Bengio 2003) and Benjamini-Hochberg FDR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import brainmaps.analysis
import brainmaps.baselines
from brainmaps.evaluation import benjamini_hochberg, corrected_resampled_ttest
from brainmaps.exceptions import ConfigError, ShapeError


def test_corrected_ttest_known_value():
    # d = (1, 2, 3): mean 2, variance 1; 3 folds: n_test / n_train = 1/2
    t, p = corrected_resampled_ttest([3.0, 5.0, 7.0], [2.0, 3.0, 4.0], n_train=20, n_test=10)
    expected_t = 2.0 / math.sqrt((1 / 3 + 1 / 2) * 1.0)
    assert t == pytest.approx(expected_t)  # 2.19089
    # Student t with 2 df: sf(t) = 1/2 - t / (2 sqrt(t^2 + 2)), so p = 1 - t / sqrt(t^2 + 2)
    assert p == pytest.approx(1.0 - expected_t / math.sqrt(expected_t**2 + 2.0))  # 0.15983
    uncorrected = 2.0 / math.sqrt(1 / 3)
    assert t < uncorrected  # the correction widens the interval


def test_corrected_ttest_edge_cases():
    assert corrected_resampled_ttest([0.8, 0.9], [0.8, 0.9], 10, 5) == (0.0, 1.0)
    t, p = corrected_resampled_ttest([0.9, 0.9], [0.8, 0.8], 10, 5)
    assert math.isnan(t) and math.isnan(p)
    t, p = corrected_resampled_ttest([0.7, 0.8, 0.9], [0.9, 0.9, 0.9], 10, 5)
    assert t < 0
    with pytest.raises(ConfigError):
        corrected_resampled_ttest([1, 2], [1, 2], 0, 5)


def test_corrected_ttest_shape_errors_and_non_finite_scores():
    with pytest.raises(ShapeError, match="2 folds"):
        corrected_resampled_ttest([0.9], [0.8], 10, 5)
    with pytest.raises(ShapeError, match="equal-length"):
        corrected_resampled_ttest([0.9, 0.8], [0.8, 0.7, 0.6], 10, 5)
    t, p = corrected_resampled_ttest([0.9, np.nan, 0.8], [0.8, 0.7, 0.6], 10, 5)
    assert math.isnan(t) and math.isnan(p)


def test_corrected_ttest_without_correction_is_the_paired_t_test():
    # n_test / n_train -> 0 leaves 1/J: the plain paired t-test of scipy
    a, b = [0.81, 0.86, 0.79, 0.90, 0.84], [0.78, 0.80, 0.80, 0.85, 0.79]
    t, p = corrected_resampled_ttest(a, b, n_train=1e12, n_test=1e-12)
    ref = stats.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_benjamini_hochberg_known_values_and_edges():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.5])
    assert benjamini_hochberg([]).shape == (0,)
    np.testing.assert_allclose(benjamini_hochberg([0.2]), [0.2])
    for bad in ([0.1, np.nan], [-0.1, 0.2], [0.1, 1.5]):
        with pytest.raises(ConfigError, match="p-values"):
            benjamini_hochberg(bad)


def test_one_statistic_shared_by_analysis_and_baselines():
    assert brainmaps.analysis.benjamini_hochberg is benjamini_hochberg
    assert brainmaps.baselines.corrected_resampled_ttest is corrected_resampled_ttest
