"""Regression baselines on a tiny brain-age run: same folds, bias line on the CNN's val rows."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.compare import format_comparison
from brainmaps.baselines.morphometry import run_morphometry
from brainmaps.baselines.run import run_baselines
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.folder import open_run
from brainmaps.training.run import train_run
from tiny import tiny_config

MODELS = ("svm", "ridge", "svr", "gpr")


def _age_atlas(cohort, folder):
    """Label 1: the voxels of the planted age effect (ventricles); label 2: a box elsewhere."""
    gt = nib.load(cohort / "ground_truth_age_mask.nii.gz")
    age = np.asarray(gt.dataobj) > 0
    labels = np.zeros(age.shape, dtype=np.int16)
    labels[age] = 1
    box = np.zeros_like(age)
    box[5:15, 10:25, 10:20] = True
    labels[box & ~age] = 2
    atlas = folder / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, gt.affine), atlas)
    table = folder / "atlas.tsv"
    table.write_text("index\tname\n1\tventricles\n2\tother\n")
    return atlas, table


@pytest.fixture(scope="module")
def age_baselines(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("age_baselines")
    config = tiny_config(tiny_cohort, base / "run", base / "cache", val_fraction=0.25, epochs=3)
    config = config.replace(data=dataclasses.replace(config.data, target="age"))
    with pytest.warns(BrainmapsWarning, match="hardly follow"):  # 3 epochs learn little
        train_run(config, progress=False)
    # the region means on the 8 mm grid carry little of the age effect: the baselines learn
    # little too (slopes about 0), so nothing here asserts their accuracy

    atlas, labels = _age_atlas(tiny_cohort, base)
    features = base / "features.tsv"
    run_morphometry(base / "run", atlas, labels, features, progress=False)
    comparison = run_baselines(
        base / "run", models=",".join(MODELS), features=features, progress=False
    )
    return base / "run", comparison


def test_comparison_lists_the_cnn_and_the_regression_baselines(age_baselines):
    run_dir, comparison = age_baselines
    assert list(comparison["model"]) == ["cnn", *MODELS]
    for column in ("mae", "mae_corrected", "r_gap_y", "r_gap_y_corrected", "mae_mean_predictor"):
        assert np.isfinite(comparison[f"{column}_mean"]).all(), column
    baselines = comparison.set_index("model").loc[list(MODELS)]
    assert np.isfinite(baselines["t"]).all() and baselines["p"].between(0, 1).all()
    text = format_comparison(comparison)
    assert "MAE corr." in text and "t vs cnn" in text
    metrics = pd.read_csv(run_dir / "baselines" / "metrics.tsv", sep="\t", dtype={"fold": str})
    cnn = pd.read_csv(run_dir / "metrics.tsv", sep="\t", dtype={"fold": str})
    assert list(metrics.columns[1:]) == list(cnn.columns)


def test_lines_are_fitted_on_the_runs_val_rows(age_baselines):
    run_dir, _ = age_baselines
    run = open_run(run_dir)
    params = pd.read_csv(run_dir / "baselines" / "params.tsv", sep="\t")
    predictions = pd.read_csv(
        run_dir / "baselines" / "predictions.tsv", sep="\t", dtype={"subject": str}
    )
    for _, row in params.iterrows():
        line = json.loads(row["bias"])
        assert line["source"] == "val" and line["n"] == len(run.indices(row["fold"], "val"))
        part = predictions[
            (predictions["model"] == row["model"]) & (predictions["fold"] == row["fold"])
        ]
        expected = part["prediction"] - (line["intercept"] + line["slope"] * part["y"])
        np.testing.assert_allclose(part["gap_corrected"], expected, atol=1e-4)  # 6 digits
        fit = run.indices(row["fold"], "train")
        assert part["train_mean"].iloc[0] == pytest.approx(run.labels[fit].mean())


def test_regression_names_are_refused_on_a_classification_run(tiny_run):
    with pytest.raises(ConfigError, match="regression baselines"):
        run_baselines(tiny_run, models="svm,gpr", features="unused.tsv")
    with pytest.raises(ConfigError, match="ridge,svr,gpr"):
        run_baselines(tiny_run, models="svm,lasso")
