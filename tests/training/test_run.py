"""End-to-end cross-validated training on a tiny synthetic cohort."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from brainmaps.exceptions import CohortError, ConfigError, DataLeakageError
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.run.config import TrainingConfig
from brainmaps.training.run import train_run
from tiny import TINY_GRID, tiny_config


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    """A short run with an inner validation set: layout, roles, resume and determinism.

    Three epochs, as nothing here asserts what the model learnt (``tiny_run`` does).
    """
    base = tmp_path_factory.mktemp("run")
    config = tiny_config(tiny_cohort, base / "r1", base / "cache", epochs=3, val_fraction=0.1)
    return config, train_run(config, progress=False)


def test_learns_the_planted_effect(tiny_run):
    metrics = pd.read_csv(tiny_run / "metrics.tsv", sep="\t", dtype={"fold": str})
    mean = metrics.set_index("fold").loc["mean"]
    # measured over training seeds 0-9 on this split, 1 and 2 threads, with and without
    # BatchNorm recalibration: accuracy 0.85-1.00, ROC AUC 0.92-1.00 (seed 7: accuracy
    # 0.95-0.98, ROC AUC 0.99-1.00)
    assert mean["accuracy"] >= 0.75, metrics
    assert mean["roc_auc"] >= 0.85, metrics


def test_run_folder_layout(trained):
    _, result = trained
    out = result.out
    for name in ("config.yaml", "cohort.tsv", "folds.tsv", "predictions.tsv", "metrics.tsv"):
        assert (out / name).is_file(), name
    for k in range(3):
        for name in ("model.pt", "predictions.tsv", "history.tsv"):
            assert (out / f"fold-{k}" / name).is_file()
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t", dtype={"fold": str})
    assert list(metrics["fold"]) == ["0", "1", "2", "mean", "std"]
    assert {"accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity"} <= set(
        metrics.columns
    )


def test_every_subject_is_tested_once_out_of_fold(trained):
    _, result = trained
    folds = pd.read_csv(result.out / "folds.tsv", sep="\t", dtype=str)
    tests = folds[folds["role"] == "test"]
    assert tests["subject"].is_unique and len(tests) == 40
    for _, part in folds.groupby("fold"):
        test_subjects = set(part.loc[part["role"] == "test", "subject"])
        other = set(part.loc[part["role"] != "test", "subject"])
        assert not test_subjects & other
        assert (part["role"] == "val").any()
    preds = result.predictions
    assert preds["subject"].is_unique and len(preds) == 40
    assert np.allclose(preds[["p_control", "p_patient"]].sum(axis=1), 1.0, atol=1e-5)


def test_checkpoint_metadata(trained):
    config, result = trained
    state, meta = load_checkpoint(result.out / "fold-0" / "model.pt")
    assert meta["classes"] == ["control", "patient"]
    assert meta["grid_shape"] == list(TINY_GRID)
    assert np.allclose(meta["grid_affine"], config.preprocess.grid.affine)
    assert meta["model"] == "xin2019" and meta["preprocess"]["normalization"] == "zscore"
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_resume_and_determinism(trained, tmp_path):
    config, result = trained
    copy = tmp_path / "r1"
    shutil.copytree(result.out, copy)
    (copy / "fold-2" / "model.pt").unlink()
    (copy / "metrics.tsv").unlink()
    before = (copy / "fold-0" / "model.pt").stat().st_mtime_ns
    again = train_run(config.replace(out=str(copy)), progress=False)
    assert again.resumed_folds == [0, 1]
    assert (copy / "fold-0" / "model.pt").stat().st_mtime_ns == before
    # fold 2 was trained again from scratch with the same seed: identical metrics
    pd.testing.assert_frame_equal(again.metrics, result.metrics)


def test_other_config_in_same_folder_is_refused(trained):
    config, _ = trained
    settings = config.to_dict()["training"]
    other = config.replace(
        training=TrainingConfig(**{**settings, "epochs": settings["epochs"] + 1})
    )
    with pytest.raises(ConfigError, match=r"training\.epochs"):
        train_run(other, progress=False)


def test_leaking_user_split_is_refused(tiny_cohort, tmp_path):
    subjects = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")["participant_id"]
    folds = pd.DataFrame({"subject": [*subjects, subjects[0]], "fold": [0, 1] * 20 + [1]})
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    config = tiny_config(
        tiny_cohort, tmp_path / "r", tmp_path / "c", folds_file=str(tmp_path / "folds.tsv")
    )
    with pytest.raises(DataLeakageError, match=str(subjects[0])):
        train_run(config, progress=False)


def test_class_smaller_than_folds_is_refused(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, tmp_path / "r", tmp_path / "c", folds=25)
    with pytest.raises(CohortError, match="fold"):
        train_run(config, progress=False)


def test_user_split_is_used(tiny_cohort, tmp_path):
    subjects = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")["participant_id"]
    groups = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")["group"]
    folds = pd.DataFrame({"subject": subjects, "fold": np.where(groups.index % 2 == 0, "A", "B")})
    folds.to_csv(tmp_path / "folds.tsv", sep="\t", index=False)
    config = tiny_config(
        tiny_cohort,
        tmp_path / "r",
        tmp_path / "c",
        folds_file=str(tmp_path / "folds.tsv"),
        epochs=1,
    )
    result = train_run(config, progress=False)
    written = pd.read_csv(tmp_path / "r" / "folds.tsv", sep="\t", dtype=str)
    tested = written[written["role"] == "test"].set_index("subject")["fold"]
    expected = {s.removeprefix("sub-"): str(i % 2) for i, s in enumerate(subjects)}
    assert tested.to_dict() == expected
    assert list(result.metrics["fold"]) == ["0", "1", "mean", "std"]
