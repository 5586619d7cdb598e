"""Regression runs: the bias line is fitted on each fold's validation subjects and applied to
its test subjects; predictions.tsv and metrics.tsv carry the gap before and after."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from brainmaps.exceptions import BrainmapsWarning
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.training.run import train_run
from tiny import tiny_config


@pytest.fixture(scope="module")
def age_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("age_bias")
    config = tiny_config(tiny_cohort, base / "run", base / "cache", val_fraction=0.25)
    config = config.replace(data=replace(config.data, target="age"))
    with warnings.catch_warnings():  # the tiny model learns little of age: warned
        warnings.simplefilter("ignore", BrainmapsWarning)
        result = train_run(config, progress=False)
    return base / "run", result


def test_bias_is_fitted_on_validation_subjects_and_applied_to_test_subjects(age_run):
    run_dir, result = age_run
    p = result.predictions
    np.testing.assert_allclose(p["gap"], p["prediction"] - p["y"], atol=1e-4)  # 6 digits
    np.testing.assert_allclose(p["gap_corrected"], p["prediction_corrected"] - p["y"], atol=1e-4)
    roles = pd.read_csv(run_dir / "folds.tsv", sep="\t", dtype=str)
    for k in range(3):
        meta = load_checkpoint(run_dir / f"fold-{k}" / "model.pt")[1]
        line = meta["bias"]
        n_val = int(((roles["fold"] == str(k)) & (roles["role"] == "val")).sum())
        assert line["n_val"] == n_val > 0
        part = p[p["fold"] == k]
        expected = part["prediction"] - (line["intercept"] + line["slope"] * part["y"])
        np.testing.assert_allclose(part["gap_corrected"], expected, atol=1e-4)
        assert part["train_mean"].nunique() == 1


def test_the_correction_takes_the_gap_off_the_target(age_run):
    """Measured over training seeds 7, 0, 1 (tiny runs on age, 25 % validation): pooled
    correlation of the gap with age -0.966, -0.977, -0.972 before and -0.372, 0.002, -0.490
    after; asserted: after is at least 0.3 closer to zero."""
    _, result = age_run
    p = result.predictions
    before = np.corrcoef(p["gap"], p["y"])[0, 1]
    after = np.corrcoef(p["gap_corrected"], p["y"])[0, 1]
    assert before < -0.5
    assert abs(after) < abs(before) - 0.3
    m = result.metrics.set_index("fold")
    for column in ("mae_corrected", "r_gap_y", "r_gap_y_corrected", "mae_mean_predictor"):
        assert np.isfinite(m.loc["mean", column]), column


def test_a_flat_bias_line_is_warned_about():
    """Validation predictions that ignore the target (slope 0): correcting them would give
    back the true values, so the user is told not to read the corrected MAE as accuracy."""
    from brainmaps.training.fold import _bias_line

    y = np.array([20.0, 35.0, 50.0, 65.0, 80.0])
    with pytest.warns(BrainmapsWarning, match="hardly follow"):
        line = _bias_line(None, y, np.full(5, 50.0), 0, 5)
    assert line["slope"] == pytest.approx(0.0, abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BrainmapsWarning)
        assert _bias_line(None, y, 0.8 * y + 10, 0, 5)["slope"] == pytest.approx(0.8)


def test_predict_with_true_values_gives_the_corrected_gap(age_run, tiny_cohort, capsys):
    """New scans of known age: the gap and the gap after the run's out-of-fold bias line."""
    from brainmaps.cli.main import main
    from brainmaps.evaluation.bias import fit_bias
    from brainmaps.exceptions import ConfigError
    from brainmaps.training.ensembles import predict_run

    run_dir, result = age_run
    scans = [tiny_cohort / s / "anat" / f"{s}_T1w.nii.gz" for s in ("sub-0001", "sub-0002")]
    table = predict_run(run_dir, scans, targets=[30.0, 70.0])
    a, b = fit_bias(result.predictions["y"], result.predictions["prediction"])
    np.testing.assert_allclose(table["gap"], table["prediction"] - [30.0, 70.0])
    np.testing.assert_allclose(
        table["gap_corrected"], table["prediction"] - (a + b * np.array([30.0, 70.0]))
    )
    with pytest.raises(ConfigError, match="one finite true value per scan"):
        predict_run(run_dir, scans, targets=[30.0])
    assert main(["predict", str(run_dir), *map(str, scans), "--targets", "30,70"]) == 0
    assert "gap_corrected" in capsys.readouterr().out
    assert main(["predict", str(run_dir), str(scans[0]), "--targets", "old"]) != 0


def test_report_shows_the_gap_before_and_after(age_run, tmp_path):
    import shutil

    from brainmaps.reports import build_report

    run_dir, _ = age_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    html = build_report(copy).read_text()
    assert "Regression to the mean" in html and "mae_mean_predictor" in html
    assert "Gap against the true value, before and after correction." in html
