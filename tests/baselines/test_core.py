"""Nested cross-validation: folds as given, nothing fitted on test rows, grouped inner CV."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from brainmaps.baselines.core import as_splits, inner_splits, nested_cv, table_features
from brainmaps.baselines.tabular import cross_validate_tabular
from brainmaps.exceptions import ConfigError, DataLeakageError

SEEN: list[set[int]] = []


class RowSpy(ClassifierMixin, BaseEstimator):
    """Records the row numbers (column 0) of every fit; predicts the majority class."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, x, y):
        SEEN.append({int(v) for v in x[:, 0]})
        self.classes_ = np.unique(y)
        self.majority_ = int(np.bincount(y).argmax())
        return self

    def predict(self, x):
        return np.full(len(x), self.majority_)

    def predict_proba(self, x):
        proba = np.zeros((len(x), len(self.classes_)))
        proba[:, list(self.classes_).index(self.majority_)] = 1.0
        return proba


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    x = np.column_stack([np.arange(n), rng.normal(size=n) + 2.0 * y])
    return x, y


def test_grid_search_never_sees_the_outer_test_rows():
    x, y = _data()
    folds = np.arange(30) % 3
    SEEN.clear()
    result = nested_cv(RowSpy(), {"alpha": [1.0, 2.0]}, y, folds, table_features(x), name="spy")
    # 3 outer folds x (2 candidates x inner folds + 1 refit)
    assert len(SEEN) == 3 * (2 * 5 + 1)
    per_fold = len(SEEN) // 3
    for k in range(3):
        test_rows = set(np.flatnonzero(folds == k).tolist())
        for seen in SEEN[k * per_fold : (k + 1) * per_fold]:
            assert not seen & test_rows
        # the refit (last fit of the fold) uses the whole training part
        assert SEEN[(k + 1) * per_fold - 1] == set(range(30)) - test_rows
    assert list(result.fold) == list(folds)


def test_scaler_is_fitted_on_the_training_rows_only():
    x, y = _data(seed=1)
    x[:, 1] += np.where(np.arange(30) < 10, 50.0, 0.0)  # the first test fold is shifted
    folds = [(np.arange(10, 30), np.arange(10)), (np.arange(20), np.arange(20, 30))]
    result = cross_validate_tabular(x, y, folds, "lr", inner_folds=3)
    for (train, _), estimator in zip(folds, result.estimators, strict=True):
        scaler = estimator.named_steps["scale"]
        np.testing.assert_allclose(scaler.mean_, x[train].mean(axis=0))
        assert not np.allclose(scaler.mean_, x.mean(axis=0))


def test_inner_folds_are_grouped_by_subject():
    subjects = np.repeat([f"s{i}" for i in range(12)], 2)  # two sessions each
    y = np.repeat(np.tile([0, 1], 6), 2)
    for train, val in inner_splits(subjects, y, "classification", 3, seed=0):
        assert not set(subjects[train]) & set(subjects[val])
        assert set(y[val]) == {0, 1}


def test_a_subject_in_train_and_test_is_refused():
    x, y = _data()
    groups = np.arange(30).astype(str)
    groups[0] = groups[1]  # rows 0 and 1 are one subject, in different folds
    with pytest.raises(DataLeakageError, match="both its training and test"):
        cross_validate_tabular(x, y, np.arange(30) % 3, "lr", groups=groups)


def test_splits_are_checked():
    assert len(as_splits(np.array([0, 1, 0, 1]), 4)) == 2
    with pytest.raises(ConfigError, match="disjoint"):
        as_splits([(np.array([0, 1]), np.array([1, 2])), (np.array([2]), np.array([3]))], 4)
    with pytest.raises(ConfigError, match="already tested"):
        as_splits([(np.array([0]), np.array([1, 2])), (np.array([0]), np.array([2]))], 3)
    with pytest.raises(ConfigError, match="integers"):
        as_splits(np.array([0.0, 1.0]), 2)


def test_regression_predicts_in_original_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = 50.0 + 10.0 * x[:, 0] + rng.normal(scale=0.5, size=40)
    result = cross_validate_tabular(x, y, np.arange(40) % 4, "lr", task="regression")
    mean = result.metrics.set_index("fold").loc["mean"]
    assert mean["mae"] < 1.0 and mean["r"] > 0.99
    top = result.importances.iloc[0]
    # standardised coefficient: slope x sd(x) / sd(y)
    expected = 10.0 * x[:, 0].std() / y.std()
    assert top["feature"] == "f0" and top["importance"] == pytest.approx(expected, rel=0.05)
