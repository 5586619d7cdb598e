"""Comparison table and the corrected resampled t-test (Nadeau & Bengio 2003)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.compare import (
    compare_models,
    corrected_resampled_ttest,
    format_comparison,
)
from brainmaps.exceptions import ConfigError


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


def _metrics(acc):
    rows = pd.DataFrame({"fold": [str(k) for k in range(len(acc))], "accuracy": acc})
    rows["balanced_accuracy"] = rows["accuracy"]
    rows["roc_auc"] = 1.0
    summary = pd.DataFrame({"fold": ["mean", "std"], "accuracy": [0.0, 0.0]})
    return pd.concat([rows, summary], ignore_index=True)


def test_compare_models_table_and_text():
    per_fold = {"cnn": _metrics([0.9, 0.8, 0.85]), "svm": _metrics([0.8, 0.7, 0.85])}
    table = compare_models(per_fold, n_train=20, n_test=10)
    assert list(table["model"]) == ["cnn", "svm"]
    svm = table.set_index("model").loc["svm"]
    assert svm["accuracy_mean"] == pytest.approx(np.mean([0.8, 0.7, 0.85]))
    assert svm["accuracy_std"] == pytest.approx(np.std([0.8, 0.7, 0.85], ddof=1))
    t, p = corrected_resampled_ttest([0.8, 0.7, 0.85], [0.9, 0.8, 0.85], 20, 10)
    assert svm["t"] == pytest.approx(t) and svm["p"] == pytest.approx(p)
    assert np.isnan(table.set_index("model").loc["cnn", "t"])
    text = format_comparison(table)
    assert "0.783 ± 0.076" in text and "t vs cnn" in text


def test_compare_models_needs_identical_folds():
    per_fold = {"cnn": _metrics([0.9, 0.8, 0.85]), "svm": _metrics([0.8, 0.7])}
    with pytest.raises(ConfigError, match="different folds"):
        compare_models(per_fold, n_train=20, n_test=10)


def test_regression_compares_mae():
    def frame(mae):
        return pd.DataFrame({"fold": ["0", "1", "2"], "mae": mae, "rmse": mae, "r": 0.5})

    per_fold = {"cnn": frame([5.0, 6.0, 7.0]), "lr": frame([6.0, 8.0, 7.5])}
    table = compare_models(per_fold, n_train=20, n_test=10, task="regression")
    assert {"mae_mean", "rmse_mean", "r_mean", "r2_mean"} <= set(table.columns)
    assert table.set_index("model").loc["lr", "t"] > 0  # the baseline's error is higher
    assert "mae" in format_comparison(table)
