"""Age-bias correction: a known shrinkage toward the mean is removed on held-out subjects."""

from __future__ import annotations

import numpy as np
import pytest

from brainmaps.evaluation.bias import apply_bias, bias_metrics, fit_bias


def shrunk(y, rng, slope=0.6, centre=50.0, noise=3.0):
    """Predictions that regress toward ``centre``: the brain-age bias."""
    return centre + slope * (y - centre) + rng.normal(0, noise, len(y))


def test_fit_recovers_the_line():
    rng = np.random.default_rng(0)
    y = rng.uniform(20, 80, 400)
    intercept, slope = fit_bias(y, shrunk(y, rng, noise=0.5))
    assert slope == pytest.approx(0.6, abs=0.01)
    assert intercept == pytest.approx(50 - 0.6 * 50, abs=0.6)


def test_correction_fitted_on_validation_removes_the_trend_on_test():
    rng = np.random.default_rng(1)
    y_val, y_test = rng.uniform(20, 80, 60), rng.uniform(20, 80, 200)
    line = fit_bias(y_val, shrunk(y_val, rng))
    pred = shrunk(y_test, rng)
    corrected = apply_bias(y_test, pred, *line)
    m = bias_metrics(y_test, pred, corrected, train_mean=50.0)
    assert m["r_gap_y"] < -0.8  # the young predicted older, the old younger
    assert abs(m["r_gap_y_corrected"]) < 0.15
    assert m["mae_mean_predictor"] == pytest.approx(np.mean(np.abs(y_test - 50.0)))
    # the corrected gap is the residual from the fitted line
    np.testing.assert_allclose(corrected - y_test, pred - (line[0] + line[1] * y_test))


def test_no_line_without_enough_distinct_targets():
    assert fit_bias([30.0, 40.0], [35.0, 41.0]) is None
    assert fit_bias([30.0, 30.0, 30.0], [1.0, 2.0, 3.0]) is None
    m = bias_metrics([1.0, 2.0, 3.0], [1.5, 2.0, 2.5], np.full(3, np.nan))
    assert np.isnan(m["mae_corrected"]) and np.isnan(m["r_gap_y_corrected"])
