"""End to end on the tiny run: morphometry, baselines on the CNN's folds, comparison, CLI."""

from __future__ import annotations

import argparse
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.run import run_baselines
from brainmaps.cli import baseline as baseline_cli
from brainmaps.cli import morphometry as morphometry_cli
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.folder import open_run


def _tiny_atlas(cohort, folder):
    """Label 1: the planted effect's voxels; label 2: a box of other voxels."""
    gt = nib.load(cohort / "ground_truth_mask.nii.gz")
    effect = np.asarray(gt.dataobj) > 0
    labels = np.zeros(effect.shape, dtype=np.int16)
    labels[effect] = 1
    box = np.zeros_like(effect)
    box[5:15, 10:25, 10:20] = True
    labels[box & ~effect] = 2
    atlas = folder / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, gt.affine), atlas)
    table = folder / "atlas.tsv"
    table.write_text("index\tname\n1\teffect\n2\tother\n")
    return atlas, table


def _cli(module, argv) -> int:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


@pytest.fixture(scope="module")
def baselines(tiny_run, tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("baselines")
    run_dir = base / "run"
    shutil.copytree(tiny_run, run_dir)
    atlas, labels = _tiny_atlas(tiny_cohort, base)
    features = base / "features.tsv"
    argv = ["morphometry", str(run_dir), "--atlas", str(atlas), "--labels", str(labels)]
    assert _cli(morphometry_cli, [*argv, "--out", str(features), "--no-progress"]) == 0
    table = pd.read_csv(features, sep="\t", dtype={"subject": str})
    table.insert(1, "ID", table["subject"].astype(int))  # the subject number as a "feature"
    table.to_csv(features, sep="\t", index=False)
    with pytest.warns(BrainmapsWarning, match="'ID'"):
        comparison = run_baselines(run_dir, models=("svm", "lr"), features=features, progress=False)
    return run_dir, features, comparison


def test_outputs_are_written(baselines):
    run_dir, _, comparison = baselines
    out = run_dir / "baselines"
    for name in ("metrics.tsv", "predictions.tsv", "params.tsv", "comparison.tsv"):
        assert (out / name).is_file(), name
    assert (out / "importances_lr.tsv").is_file() and (out / "importances_lr.png").is_file()
    assert not (out / "importances_svm.tsv").exists()
    metrics = pd.read_csv(out / "metrics.tsv", sep="\t", dtype={"fold": str})
    assert list(metrics["model"]) == ["svm"] * 5 + ["lr"] * 5
    assert list(metrics["fold"]) == ["0", "1", "2", "mean", "std"] * 2
    cnn = pd.read_csv(run_dir / "metrics.tsv", sep="\t", dtype={"fold": str})
    assert list(metrics.columns[1:]) == list(cnn.columns)
    assert list(comparison["model"]) == ["cnn", "svm", "lr"]
    written = pd.read_csv(out / "comparison.tsv", sep="\t")
    pd.testing.assert_frame_equal(written, comparison, check_exact=False, rtol=1e-5)


def test_baselines_learn_the_planted_effect(baselines):
    _, _, comparison = baselines
    table = comparison.set_index("model")
    # scikit-learn on the cached volumes and region means, no CNN training involved:
    # measured svm 0.82, lr 0.97 (AUC 1.00). The CNN-vs-svm t-test is finite whatever
    # the CNN learnt: fold sizes 14, 13, 13 make equal non-zero per-fold differences
    # impossible, and equal zero differences give t = 0.
    assert table.loc["svm", "accuracy_mean"] >= 0.7, comparison
    assert table.loc["lr", "accuracy_mean"] >= 0.85, comparison
    assert table.loc["lr", "roc_auc_mean"] >= 0.9, comparison
    assert np.isfinite(table.loc["svm", "t"]) and 0.0 <= table.loc["svm", "p"] <= 1.0


def test_same_folds_as_the_cnn(baselines):
    run_dir, _, _ = baselines
    run = open_run(run_dir)
    predictions = pd.read_csv(
        run_dir / "baselines" / "predictions.tsv", sep="\t", dtype={"subject": str}
    )
    for model, part in predictions.groupby("model"):
        assert part["subject"].is_unique and len(part) == len(run.table), model
        for k in range(run.n_folds):
            expected = set(run.table["subject"].iloc[run.indices(k, "test")])
            assert set(part.loc[part["fold"] == k, "subject"]) == expected, (model, k)
    assert np.allclose(predictions[["p_control", "p_patient"]].sum(axis=1), 1.0)


def test_the_id_column_is_not_a_feature_and_the_effect_ranks_first(baselines):
    run_dir, _, _ = baselines
    importances = pd.read_csv(run_dir / "baselines" / "importances_lr.tsv", sep="\t")
    assert "ID" not in set(importances["feature"])
    # patients are darker in the effect region: its mean favours 'control' (class 0);
    # measured importance -3.06, next feature -0.28
    assert importances.loc[0, "feature"] == "effect_mean"
    assert importances.loc[0, "importance"] < 0


def test_cli_adds_a_model_and_keeps_the_others(baselines, tmp_path, capsys):
    shared_run, features, _ = baselines
    run_dir = tmp_path / "run"  # a copy: the other tests read the fixture's two models
    shutil.copytree(shared_run, run_dir)
    argv = ["baseline", str(run_dir), "--models", "knn", "--features", str(features)]
    with pytest.warns(BrainmapsWarning):
        assert _cli(baseline_cli, [*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "t vs cnn" in printed and "knn" in printed and "svm" in printed
    metrics = pd.read_csv(run_dir / "baselines" / "metrics.tsv", sep="\t")
    assert list(dict.fromkeys(metrics["model"])) == ["svm", "lr", "knn"]


def test_table_models_need_features(tiny_run):
    with pytest.raises(ConfigError, match="--features"):
        run_baselines(tiny_run, models=("svm", "lr"))
    with pytest.raises(ConfigError, match="unknown"):
        run_baselines(tiny_run, models="svm,rf")
