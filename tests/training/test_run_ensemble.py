"""Ensembles of members per fold (``training.ensemble``): mean, spread, resume, predict."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from brainmaps.exceptions import BrainmapsWarning
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.training.ensembles import predict_run
from brainmaps.training.run import train_run
from tiny import tiny_config


@pytest.fixture(scope="module")
def ensemble_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("ensemble")
    config = tiny_config(tiny_cohort, base / "run", base / "cache", epochs=2, ensemble=3)
    single = tiny_config(tiny_cohort, base / "single", base / "cache", epochs=2)
    return train_run(config, progress=False), train_run(single, progress=False), base


def _member(run_dir, k, j):
    frame = pd.read_csv(run_dir / f"fold-{k}" / f"member-{j}" / "predictions.tsv", sep="\t")
    return frame[frame["role"] == "test"].reset_index(drop=True)


def test_fold_predictions_are_the_members_mean_with_their_spread(ensemble_run):
    result, single, base = ensemble_run
    run_dir = base / "run"
    p = result.predictions
    for k in range(3):
        members = [_member(run_dir, k, j) for j in range(3)]
        stacked = np.stack([m[["p_control", "p_patient"]].to_numpy() for m in members])
        fold = p[p["fold"] == k].reset_index(drop=True)
        np.testing.assert_allclose(fold[["p_control", "p_patient"]], stacked.mean(0), atol=1e-5)
        np.testing.assert_allclose(fold["std_patient"], stacked[:, :, 1].std(0), atol=1e-5)
        seeds = [load_checkpoint(run_dir / f"fold-{k}" / (f"member-{j}/" if j else "") / "model.pt")
                 [1].get("member_seed") for j in range(3)]  # fmt: skip
        assert len(set(seeds)) == 3
    # member 0 is the one-member run's model: same seed, same predictions
    np.testing.assert_allclose(
        _member(run_dir, 0, 0)[["p_patient"]], single.predictions.loc[
            single.predictions["fold"] == 0, ["p_patient"]].reset_index(drop=True), atol=1e-6
    )  # fmt: skip


def test_predict_uses_every_member(ensemble_run, tiny_cohort):
    _, _, base = ensemble_run
    scan = tiny_cohort / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz"
    table = predict_run(base / "run", [scan])
    assert int(table["n_models"].iloc[0]) == 9  # 3 folds x 3 members


def test_an_interrupted_ensemble_resumes_member_by_member(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, tmp_path / "run", tmp_path / "cache", epochs=1, ensemble=3)
    first = train_run(config, progress=False)
    fold = tmp_path / "run" / "fold-1"
    (fold / "member-2" / "model.pt").unlink()  # killed while training member 2 of fold 1
    (fold / "predictions.tsv").unlink()
    kept = {j: (fold / f"member-{j}" / "predictions.tsv").stat().st_mtime_ns for j in (0, 1)}
    again = train_run(config, progress=False)
    assert again.resumed_folds == [0, 2]
    for j in (0, 1):  # members 0 and 1 were kept, not retrained
        assert (fold / f"member-{j}" / "predictions.tsv").stat().st_mtime_ns == kept[j]
    assert (fold / "member-2" / "model.pt").is_file()
    pd.testing.assert_frame_equal(again.predictions, first.predictions, atol=1e-6)


def test_regression_ensemble_has_a_prediction_spread_and_one_bias_line(tiny_cohort, tmp_path):
    config = tiny_config(
        tiny_cohort, tmp_path / "age", tmp_path / "cache", epochs=1, ensemble=2, val_fraction=0.25
    )
    config = config.replace(data=replace(config.data, target="age"))
    with warnings.catch_warnings():  # a 1-epoch tiny model learns little of age
        warnings.simplefilter("ignore", BrainmapsWarning)
        result = train_run(config, progress=False)
    p = result.predictions
    assert (p["prediction_std"] >= 0).all() and (p["prediction_std"] > 0).any()
    meta = load_checkpoint(tmp_path / "age" / "fold-0" / "model.pt")[1]
    assert "bias" in meta and meta["ensemble"] == 2
    assert np.isfinite(p["gap_corrected"]).all()
