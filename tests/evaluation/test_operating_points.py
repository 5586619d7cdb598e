"""Operating points on hand-made scores whose thresholds and metrics are known."""

from __future__ import annotations

import numpy as np
import pytest

from brainmaps.evaluation.operating_points import (
    ThresholdRule,
    bootstrap_metrics,
    calibration_curve,
    choose_threshold,
    confusion_metrics,
    metrics_at,
    nested_calls,
    operating_points,
    parse_rule,
    roc_points,
)
from brainmaps.exceptions import ConfigError

# 4 negatives, 4 positives; one negative (0.6) above one positive (0.4)
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORE = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_rules_are_parsed_and_named():
    assert parse_rule("youden") == ThresholdRule("youden")
    assert parse_rule(" SENS=0.9 ") == ThresholdRule("sensitivity", 0.9)
    assert parse_rule("spec=0.85").name == "spec=0.85"
    assert parse_rule("0.5") == ThresholdRule("value", 0.5) == parse_rule(0.5)
    assert parse_rule(0.3).name == "0.3"
    for bad in ("1.5", "sens=1", "spec=0", "median", "sens=", "", True):
        with pytest.raises(ConfigError, match="threshold"):
            parse_rule(bad)
    with pytest.raises(ConfigError, match="--threshold must be"):
        parse_rule("x", "--threshold")


def test_youden_threshold_is_the_known_one():
    # J at 0.7: sens 3/4 + spec 4/4 - 1 = 0.75; at 0.4: 1 + 3/4 - 1 = 0.75 (tie: highest);
    # every other threshold is lower (e.g. 0.8: 0.5, 0.3: 0.5)
    assert choose_threshold(Y, SCORE, "youden") == 0.7
    # a strictly best threshold: move the odd negative below every positive
    clean = np.where(SCORE == 0.6, 0.35, SCORE)
    assert choose_threshold(Y, clean, "youden") == 0.4


def test_sensitivity_and_specificity_targets():
    # the highest threshold with sensitivity >= s; the lowest with specificity >= s
    assert choose_threshold(Y, SCORE, "sens=0.75") == 0.7  # 3 of 4 positives >= 0.7
    assert choose_threshold(Y, SCORE, "sens=0.9") == 0.4  # all 4 positives
    assert choose_threshold(Y, SCORE, "spec=0.75") == 0.4  # 3 of 4 negatives below 0.4
    assert choose_threshold(Y, SCORE, "spec=0.9") == 0.7  # all 4 negatives below 0.7
    assert choose_threshold(Y, SCORE, "0.55") == 0.55
    # a negative on top: specificity 1 needs nobody positive
    top = np.array([0, 1, 0])
    assert choose_threshold(top, [0.9, 0.5, 0.1], "spec=0.99") == np.inf


def test_metrics_by_hand():
    # at 0.4: TP 4, FN 0, FP 1 (0.6), TN 3
    m = metrics_at(Y, SCORE, 0.4)
    assert m == pytest.approx(
        {"sensitivity": 1.0, "specificity": 0.75, "ppv": 0.8, "npv": 1.0, "accuracy": 0.875}
    )
    # at 0.65: TP 3 (0.7, 0.8, 0.9), FN 1, FP 0, TN 4
    m = metrics_at(Y, SCORE, 0.65)
    assert m == pytest.approx(
        {"sensitivity": 0.75, "specificity": 1.0, "ppv": 1.0, "npv": 0.8, "accuracy": 0.875}
    )
    # nobody called positive: PPV undefined
    assert np.isnan(confusion_metrics(Y, np.zeros(8))["ppv"])


def test_bootstrap_ci_holds_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.clip(0.3 * y + rng.normal(0.35, 0.2, 200), 0, 1)
    calls = score >= 0.5
    point = confusion_metrics(y, calls)
    ci = bootstrap_metrics(y, calls, n_bootstrap=500, seed=3)
    for name, (low, high) in ci.items():
        assert low <= point[name] <= high and high - low < 0.4, name
    assert bootstrap_metrics(y, calls, n_bootstrap=500, seed=3) == ci
    assert bootstrap_metrics(y, calls, n_bootstrap=500, seed=4) != ci
    narrow = bootstrap_metrics(y, calls, n_bootstrap=500, level=0.5, seed=3)
    assert narrow["accuracy"][1] - narrow["accuracy"][0] < ci["accuracy"][1] - ci["accuracy"][0]
    with pytest.raises(ConfigError, match="n_bootstrap"):
        bootstrap_metrics(y, calls, n_bootstrap=0)


def test_calibration_of_calibrated_scores():
    rng = np.random.default_rng(0)
    score = rng.uniform(0, 1, 100_000)
    y = (rng.uniform(0, 1, score.size) < score).astype(int)  # P(y = 1 | score) = score
    curve = calibration_curve(y, score, n_bins=10)
    assert len(curve) == 10 and curve["n"].sum() == score.size
    assert (curve["n"] - score.size / 10).abs().max() <= 1  # quantile bins: equal counts
    assert np.abs(curve["observed"] - curve["mean_predicted"]).max() < 0.02
    # scores pushed to the extremes are over-confident: observed falls short of them
    sharp = np.clip((score - 0.5) * 3 + 0.5, 0, 1)
    top = calibration_curve(y, sharp, n_bins=10).iloc[-1]
    assert top["mean_predicted"] - top["observed"] > 0.05


def test_roc_points_end_at_the_corners():
    roc = roc_points(Y, SCORE)
    assert roc[["fpr", "tpr"]].iloc[0].tolist() == [0, 0]
    assert roc[["fpr", "tpr"]].iloc[-1].tolist() == [1, 1]
    assert np.isinf(roc["threshold"].iloc[0])


def test_nested_choice_is_not_optimistic():
    """The issue's check: a threshold chosen on the evaluated subjects flatters them.

    Two folds whose positives sit at different heights: fold 0 is separated at 0.5, fold 1
    at 0.25. ``sens=0.99`` chosen on the subjects it is scored on always reaches 1.0 (the
    threshold is set under the lowest positive). Chosen on the other fold, fold 1 gets 0.5
    and loses every positive: pooled nested sensitivity 4 / 8.
    """
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1] * 2)
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8,
                      0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4])  # fmt: skip
    folds = np.repeat([0, 1], 8)
    optimistic = metrics_at(y, score, choose_threshold(y, score, "sens=0.99"))["sensitivity"]
    calls, per_fold = nested_calls(y, score, folds, "sens=0.99")
    nested = confusion_metrics(y, calls)["sensitivity"]
    assert optimistic == 1.0
    assert nested == 0.5
    assert per_fold == {0: 0.25, 1: 0.5}
    row = operating_points(y, score, folds, ["sens=0.99"], n_bootstrap=200).iloc[0]
    assert row["sensitivity"] == 0.5 and row["threshold"] == 0.25
    assert row["threshold_fold_mean"] == 0.375 and row["threshold_fold_std"] == 0.125


def test_nested_youden_on_noise_finds_nothing():
    """Scores without signal (200 seeded cohorts of 40, 5 folds): Youden's J chosen on the
    subjects it is scored on is never negative (mean 0.154); chosen on the other folds it
    is about zero (mean -0.025, standard error 0.010)."""
    own, nested = [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        y, score = np.tile([0, 1], 20), rng.uniform(0, 1, 40)
        m = metrics_at(y, score, choose_threshold(y, score, "youden"))
        own.append(m["sensitivity"] + m["specificity"] - 1)
        m = confusion_metrics(y, nested_calls(y, score, np.arange(40) % 5, "youden")[0])
        nested.append(m["sensitivity"] + m["specificity"] - 1)
    assert min(own) >= 0 and np.mean(own) == pytest.approx(0.1535)
    assert np.mean(nested) == pytest.approx(-0.02525)


def test_operating_points_table():
    folds = np.arange(8) % 2
    table = operating_points(Y, SCORE, folds, ["0.5", "youden", "0.5", "sens=0.9"])
    assert table["rule"].tolist() == ["0.5", "youden", "sens=0.9"]
    assert table["threshold"].tolist() == [0.5, 0.7, 0.4]
    fixed = table.iloc[0]
    assert fixed["threshold_fold_std"] == 0 and fixed["sensitivity"] == 0.75
    assert {"ppv_low", "npv_high", "accuracy", "n", "n_positive"} <= set(table)
    assert (table["sensitivity_low"] <= table["sensitivity"]).all()


def test_not_binary_is_refused():
    with pytest.raises(ConfigError, match="binary"):
        choose_threshold([0, 1, 2], [0.1, 0.5, 0.9], "youden")
    with pytest.raises(ConfigError, match="binary"):
        calibration_curve([1, 1, 1], [0.1, 0.5, 0.9])
    with pytest.raises(ConfigError, match="one length"):
        roc_points([0, 1], [0.5])
    with pytest.raises(ConfigError, match="all of one class"):
        nested_calls([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], "youden")
    with pytest.raises(ConfigError, match="at least 2 folds"):
        nested_calls(Y, SCORE, np.zeros(8), "youden")
