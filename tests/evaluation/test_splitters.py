"""Tests of subject-grouped, stratified cross-validation splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.evaluation.splitters import (
    check_class_counts,
    check_no_leakage,
    folds_table,
    inner_split,
    make_folds,
    read_folds,
)
from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError, DataLeakageError


def multi_session_cohort(n_subjects=30, seed=0):
    """Subjects with 1-3 sessions each; the label is a subject property."""
    rng = np.random.default_rng(seed)
    sessions = rng.integers(1, 4, n_subjects)
    subject_labels = (np.arange(n_subjects) % 3 == 0).astype(int)
    subjects = np.repeat([f"sub-{i:02d}" for i in range(n_subjects)], sessions)
    labels = np.repeat(subject_labels, sessions)
    return subjects, labels


def test_sessions_of_a_subject_share_a_fold():
    subjects, labels = multi_session_cohort()
    folds = make_folds(subjects, labels, n_folds=5, seed=1)
    assert folds.shape == subjects.shape
    assert set(folds) == set(range(5))
    for s in np.unique(subjects):
        assert len(set(folds[subjects == s])) == 1
    check_no_leakage(subjects, folds)


@pytest.mark.parametrize(("n0", "n1", "k"), [(30, 20, 5), (37, 13, 10), (25, 24, 3)])
def test_class_proportions_within_one_subject(n0, n1, k):
    labels = np.array([0] * n0 + [1] * n1)
    subjects = [f"s{i}" for i in range(len(labels))]
    folds = make_folds(subjects, labels, n_folds=k, seed=7)
    for c, n in ((0, n0), (1, n1)):
        counts = np.bincount(folds[labels == c], minlength=k)
        assert counts.sum() == n
        assert counts.max() - counts.min() <= 1
        assert counts.min() == n // k


def test_string_labels_are_stratified():
    labels = np.array(["AD"] * 10 + ["CN"] * 20)
    folds = make_folds(np.arange(30), labels, n_folds=5, seed=0)
    assert all(np.sum((folds == k) & (labels == "AD")) == 2 for k in range(5))


def test_same_seed_same_folds():
    subjects, labels = multi_session_cohort()
    a = make_folds(subjects, labels, n_folds=5, seed=3)
    b = make_folds(subjects, labels, n_folds=5, seed=3)
    c = make_folds(subjects, labels, n_folds=5, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_regression_labels_are_stratified_on_quantile_bins():
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 80, 100)
    folds = make_folds(np.arange(100), ages, n_folds=10, seed=0)
    decile = np.argsort(np.argsort(ages)) // 10  # 10 bins of 10 subjects
    for k in range(10):
        assert sorted(decile[folds == k]) == list(range(10))  # one subject per decile


def test_unstratified_folds_are_balanced_in_size():
    folds = make_folds(np.arange(23), np.zeros(23), n_folds=4, seed=0, stratify=False)
    assert sorted(np.bincount(folds)) == [5, 6, 6, 6]


def test_too_few_subjects():
    with pytest.raises(CohortError, match=r"5 folds from 4 subjects.*--folds 4"):
        make_folds(["a", "a", "b", "c", "d"], [0, 0, 1, 0, 1], n_folds=5)
    with pytest.raises(ConfigError, match="n_folds"):
        make_folds(np.arange(10), np.zeros(10), n_folds=1)
    with pytest.raises(CohortError, match="labels has 3 rows"):
        make_folds(np.arange(4), [0, 1, 0], n_folds=2)


def test_check_class_counts():
    labels = np.array([0] * 3 + [1] * 20)
    check_class_counts(labels, 3)
    with pytest.raises(CohortError, match=r"'AD' \(3 subjects\).*--folds 3"):
        check_class_counts(labels, 5, classes=["AD", "CN"])
    # per-row labels: subjects are counted once
    rows = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(CohortError, match=r"1 \(1 subjects\).*drop that class"):
        check_class_counts(rows, 2, subjects=["a", "a", "b", "c", "c", "c"])


def test_check_no_leakage_names_subjects():
    check_no_leakage(["a", "a", "b"], [0, 0, 1])
    with pytest.raises(DataLeakageError, match=r"sub-02 in folds \[0, 2\]") as info:
        check_no_leakage(["sub-01", "sub-02", "sub-02", "sub-03"], [0, 0, 2, 1])
    assert "sub-01" not in str(info.value) and "sub-03" not in str(info.value)


def test_inner_split_is_grouped_stratified_and_deterministic():
    subjects, labels = multi_session_cohort(n_subjects=40)
    train, val = inner_split(subjects, labels, val_fraction=0.2, seed=5)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(subjects)))
    assert not set(subjects[train]) & set(subjects[val])
    val_subjects = pd.Series(labels[val], index=subjects[val]).groupby(level=0).first()
    assert len(val_subjects) == 8
    # 14 of 40 subjects are class 1: 20% -> about 3 in validation
    assert int(val_subjects.sum()) in (2, 3)
    _, val2 = inner_split(subjects, labels, val_fraction=0.2, seed=5)
    np.testing.assert_array_equal(val, val2)


def test_inner_split_keeps_a_subject_of_each_class_and_handles_zero():
    labels = np.array([0] * 9 + [1] * 9)
    _, val = inner_split(np.arange(18), labels, val_fraction=0.1, seed=0)
    assert sorted(labels[val]) == [0, 1]
    train, val = inner_split(np.arange(18), labels, val_fraction=0.0)
    assert len(train) == 18 and len(val) == 0


def test_inner_split_regression_and_fallback():
    ages = np.linspace(20, 80, 30)
    _, val = inner_split(np.arange(30), ages, val_fraction=0.2, seed=0)
    assert len(val) == 6 and ages[val].min() < 40 and ages[val].max() > 60
    with pytest.warns(BrainmapsWarning, match="not stratified"):
        _, val = inner_split(np.arange(6), [0, 0, 0, 0, 0, 1], val_fraction=0.3, seed=0)
    assert len(val) == 2


def test_folds_table_and_read_folds(tmp_path):
    subjects, labels = multi_session_cohort(n_subjects=12)
    folds = make_folds(subjects, labels, n_folds=3, seed=0)
    table = folds_table(subjects, folds)
    assert list(table.columns) == ["subject", "fold"] and len(table) == 12
    path = tmp_path / "folds.tsv"
    table.assign(fold=table["fold"] + 1).to_csv(path, sep="\t", index=False)
    back = read_folds(path)
    assert back["fold"].tolist() == table["fold"].tolist()  # relabelled to 0..k-1
    path.write_text("subject\tfold\nsub-01\t1\nsub-01\t2\n")
    with pytest.raises(DataLeakageError, match="sub-01"):
        read_folds(path)
    path.write_text("participant\tfold\nsub-01\t1\n")
    with pytest.raises(ConfigError, match="lacks column"):
        read_folds(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_folds(tmp_path / "missing.tsv")
