"""The comparison table of the CNN and the baselines (tests of the t-test: tests/evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.compare import compare_models, format_comparison
from brainmaps.evaluation.statistics import corrected_resampled_ttest
from brainmaps.exceptions import ConfigError


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
