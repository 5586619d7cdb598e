"""Real data: logistic regression on DLMUSE volumes classifies sex on ixi-dev."""

from __future__ import annotations

from brainmaps.baselines import cross_validate_tabular, load_features
from brainmaps.data import load_cohort
from brainmaps.evaluation.splitters import make_folds
from conftest import shared_data


def test_lr_on_dlmuse_volumes_classifies_sex():
    root = shared_data("ixi-dev")
    cohort = load_cohort(root, "sex")
    x = load_features(root / "derivatives" / "dlmuse" / "roi_volumes.tsv", cohort.subjects)
    folds = make_folds(cohort.subjects, cohort.labels, n_folds=5, seed=0)
    result = cross_validate_tabular(x, cohort.labels, folds, "lr", groups=cohort.subjects)
    mean = result.metrics.set_index("fold").loc["mean"]
    # 40 subjects (20 F / 20 M): 0.75 accuracy, 0.79 AUC with these folds
    assert mean["accuracy"] >= 0.7, result.metrics
    assert mean["roc_auc"] >= 0.7, result.metrics
