"""Tests of the classification and regression metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from brainmaps.evaluation.metrics import (
    classification_metrics,
    format_metrics_table,
    regression_metrics,
    summarize_folds,
)
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ShapeError

# 3 positives, 5 negatives; threshold 0.5 -> TP=2, FN=1, TN=4, FP=1
Y_BIN = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P_BIN = np.array([0.9, 0.8, 0.3, 0.1, 0.2, 0.4, 0.35, 0.6])


def test_binary_confusion_case():
    m = classification_metrics(Y_BIN, np.column_stack([1 - P_BIN, P_BIN]))
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # positive-negative pairs ranked right: 5 + 5 + 2 of 15
    assert m["roc_auc"] == pytest.approx(12 / 15)


def test_one_dimensional_proba_is_class_one():
    assert classification_metrics(Y_BIN, P_BIN) == pytest.approx(
        classification_metrics(Y_BIN, np.column_stack([1 - P_BIN, P_BIN]))
    )


def test_multiclass_macro_metrics():
    y = np.array([0, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    m = classification_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["sensitivity"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["specificity"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert m["roc_auc"] == pytest.approx(expected)


def test_single_class_gives_nan_auc_with_reason():
    with pytest.warns(BrainmapsWarning, match="single class"):
        m = classification_metrics([0, 0, 0], [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
    assert math.isnan(m["roc_auc"])
    assert math.isnan(m["sensitivity"])  # no positives
    assert m["specificity"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(1 / 3)


def test_classification_input_errors():
    with pytest.raises(ShapeError, match="one row per sample"):
        classification_metrics([0, 1], [[0.5, 0.5]])
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        classification_metrics([0, 2], [[0.5, 0.5], [0.1, 0.9]])
    with pytest.raises(ConfigError, match="integer class indices"):
        classification_metrics(["a", "b"], [[0.5, 0.5], [0.1, 0.9]])


def test_regression_metrics_by_hand():
    m = regression_metrics([1, 2, 3, 4], [1.5, 2, 2.5, 5])
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(1.5 / 4))
    assert m["r2"] == pytest.approx(1 - 1.5 / 5)
    # r = sum(dy dp) / sqrt(sum dy² sum dp²): dy (-1.5,-.5,.5,1.5), dp (-1.25,-.75,-.25,2.25)
    assert m["r"] == pytest.approx(5.5 / math.sqrt(5 * 7.25))


def test_regression_constant_prediction():
    m = regression_metrics([1, 2, 3], [2, 2, 2])
    assert math.isnan(m["r"])
    assert m["r2"] == pytest.approx(0.0)
    with pytest.raises(ShapeError):
        regression_metrics([1, 2], [1])


def per_fold() -> pd.DataFrame:
    return pd.DataFrame(
        {"fold": [0, 1, 2], "n_test": [10, 10, 9], "accuracy": [0.9, 0.8, 1.0],
         "roc_auc": [0.95, np.nan, 1.0]}
    )  # fmt: skip


def test_summarize_folds_adds_mean_and_std():
    table = summarize_folds(per_fold())
    assert table["fold"].tolist() == ["0", "1", "2", "mean", "std"]
    mean, std = table.iloc[3], table.iloc[4]
    assert mean["accuracy"] == pytest.approx(0.9)
    assert std["accuracy"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert mean["roc_auc"] == pytest.approx(0.975)  # NaN fold skipped
    assert mean["n_test"] == pytest.approx(29 / 3)
    again = summarize_folds(table)  # idempotent: old summary rows are replaced
    pd.testing.assert_frame_equal(again, table)


def test_format_metrics_table():
    text = format_metrics_table(per_fold())
    lines = text.splitlines()
    assert len(lines) == 5
    assert lines[0].split() == ["fold", "n_test", "accuracy", "roc_auc"]
    assert lines[1].split() == ["0", "10", "0.900", "0.950"]
    assert lines[2].split() == ["1", "10", "0.800", "nan"]
    assert lines[-1].startswith("mean ± std")
    assert "0.900 ± 0.100" in lines[-1] and "0.975 ± 0.035" in lines[-1]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert format_metrics_table(summarize_folds(per_fold())) == text
