"""Out-of-fold re-evaluation of a tiny run: masked inputs and faithfulness curves."""

from __future__ import annotations

import argparse
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis.maps import run_brain_mask
from brainmaps.attribution.cohort import explain_run
from brainmaps.cli import faithfulness as cli_faithfulness
from brainmaps.cli import masked_eval as cli_masked_eval
from brainmaps.exceptions import ConfigError, DataLeakageError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.run.folder import open_run
from brainmaps.steps.faithfulness import faithfulness_run, fold_predictor
from brainmaps.steps.masked_eval import mask_weights, masked_eval, masked_eval_run

COLUMNS = [
    "method", "mask", "weighting", "fold", "n_test", "accuracy", "balanced_accuracy",
    "roc_auc", "means",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("reevaluate") / "run"
    shutil.copytree(tiny_run, out)
    explain_run(out, ["gradient"], batch_size=8, progress=False)
    return out


@pytest.fixture(scope="module")
def masked(run_dir):
    path = masked_eval_run(run_dir, "gradient", device="cpu", progress=False)
    return pd.read_csv(path, sep="\t", dtype={"fold": str})


def _metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.tsv", sep="\t", dtype={"fold": str}).set_index("fold")


def test_masked_eval_table_shape_and_range(run_dir, masked):
    run = open_run(run_dir)
    assert list(masked.columns) == COLUMNS
    masks = ["none", *run.classes, "conjoined"]
    assert masked["mask"].drop_duplicates().tolist() == masks
    assert len(masked) == len(masks) * (run.n_folds + 2)
    assert set(masked["fold"]) == {"0", "1", "2", "mean", "std"}
    assert set(masked["weighting"]) == {"continuous"} and set(masked["means"]) == {"fold"}
    folds = masked[~masked["fold"].isin(["mean", "std"])]
    for col in ["accuracy", "balanced_accuracy", "roc_auc"]:
        assert folds[col].between(0, 1).all()
    assert folds.groupby("mask")["n_test"].sum().eq(len(run.table)).all()


def test_unmasked_accuracy_reproduces_the_runs_metrics(run_dir, masked):
    """Known answer: 'none' must equal the run's own out-of-fold metrics.tsv."""
    expected = _metrics(run_dir)
    none = masked[masked["mask"] == "none"].set_index("fold")
    for fold in ["0", "1", "2", "mean"]:
        for col in ["accuracy", "balanced_accuracy", "roc_auc"]:
            assert none.loc[fold, col] == pytest.approx(expected.loc[fold, col], abs=1e-6)


def test_mask_of_ones_and_of_zeros(run_dir):
    run = open_run(run_dir)
    shape = run.grid.shape
    table = masked_eval(
        run, {"ones": np.ones(shape), "zeros": np.zeros(shape)}, device="cpu", progress=False
    ).set_index(["mask", "fold"])
    expected = _metrics(run_dir)
    for k, path in enumerate(run.checkpoints()):
        fold = str(k)
        assert table.loc[("ones", fold), "accuracy"] == pytest.approx(
            expected.loc[fold, "accuracy"]
        )
        # a blank input gives every subject the same prediction: the accuracy of a
        # constant classifier, the share of that class in the test fold
        predict = fold_predictor(model_from_checkpoint(path)[0], device="cpu")
        constant = int(predict(np.zeros((1, *shape), np.float32)).argmax())
        share = np.mean(run.labels[run.indices(k, "test")] == constant)
        assert table.loc[("zeros", fold), "accuracy"] == pytest.approx(share)
        assert table.loc[("zeros", fold), "roc_auc"] == pytest.approx(0.5)


def test_fold_means_exclude_each_folds_test_subjects(run_dir):
    run = open_run(run_dir)
    manifest = pd.read_csv(run_dir / "maps/gradient/maps.tsv", sep="\t", dtype={"subject": str})
    weights = mask_weights(run, "gradient", weighting="continuous")
    pooled = mask_weights(run, "gradient", weighting="continuous", fold_means=False)
    cls = run.classes[1]
    for k in range(run.n_folds):
        rows = manifest[(manifest["fold"] != k) & (manifest["label"] == cls)]
        mean = np.mean([nib.load(run_dir / "maps/gradient" / f).get_fdata() for f in rows.file], 0)
        scaled = (mean - mean.min()) / (mean.max() - mean.min())
        np.testing.assert_allclose(weights[cls][k], scaled, atol=1e-5)
        assert weights[cls][k].min() == 0 and weights[cls][k].max() == pytest.approx(1)
        assert not np.allclose(weights[cls][k], pooled[cls][k], atol=1e-3)
    pooled_file = nib.load(run_dir / f"maps/gradient/mean_{cls}.nii.gz").get_fdata()
    lo, hi = pooled_file.min(), pooled_file.max()
    np.testing.assert_allclose(pooled[cls][0], (pooled_file - lo) / (hi - lo), atol=1e-5)


def test_binary_weighting_keeps_the_top_tenth_of_the_brain(run_dir):
    run = open_run(run_dir)
    brain = np.asarray(run_brain_mask(run).dataobj) > 0
    weights = mask_weights(run, "gradient", weighting="binary", threshold="top10%")
    for name in ["conjoined", *run.classes]:
        w = weights[name][0]
        assert set(np.unique(w)) == {0.0, 1.0}
        assert w.sum() == round(0.1 * brain.sum()) and not w[~brain].any()


def test_masked_eval_run_keeps_other_rows(run_dir, masked):
    path = masked_eval_run(
        run_dir, "gradient", weighting="binary", fold_means=False, device="cpu", progress=False
    )
    table = pd.read_csv(path, sep="\t", dtype={"fold": str})
    assert len(table) == 2 * len(masked)
    assert set(zip(table["weighting"], table["means"], strict=True)) == {
        ("continuous", "fold"),
        ("binary", "pooled"),
    }


def test_maps_from_the_wrong_fold_model_are_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = copy / "maps/gradient/maps.tsv"
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table.loc[0, "fold"] = str((int(table.loc[0, "fold"]) + 1) % 3)
    table.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataLeakageError, match="trained on their subject"):
        masked_eval_run(copy, "gradient", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="brainmaps explain"):
        faithfulness_run(copy, ["grad_cam"], device="cpu", progress=False)


@pytest.fixture(scope="module")
def faith(run_dir):
    path = faithfulness_run(
        run_dir, n_subjects=7, steps=5, random_state=1, device="cpu", progress=False
    )
    curves = pd.read_csv(path.with_name("faithfulness_curves.tsv"), sep="\t")
    return pd.read_csv(path, sep="\t"), curves


def test_faithfulness_tables(faith):
    table, curves = faith
    assert list(table.columns) == [
        "method", "mode", "fill", "auc", "auc_random", "auc_std", "n_subjects",
    ]  # fmt: skip
    assert set(zip(table["method"], table["mode"], strict=True)) == {
        (m, d) for m in ("gradient", "random") for d in ("deletion", "insertion")
    }
    assert (table["n_subjects"] == 7).all() and table["auc"].between(0, 1).all()
    assert list(curves.columns) == ["method", "mode", "fraction", "probability"]
    assert len(curves) == 4 * 6
    random = table[table["method"] == "random"].set_index("mode")["auc"]
    for _, row in table.iterrows():
        assert row["auc_random"] == pytest.approx(random[row["mode"]])


def test_faithfulness_curve_start_is_the_runs_own_probability(run_dir, faith):
    """Fraction 0 of deletion is the unperturbed volume: the mean probability of the
    explained (predicted) class must equal the run's out-of-fold predictions of the same
    subjects; fraction 1 of deletion equals fraction 0 of insertion (all filled)."""
    _, curves = faith
    c = curves.set_index(["method", "mode", "fraction"])["probability"]
    preds = pd.read_csv(run_dir / "predictions.tsv", sep="\t", dtype={"subject": str})
    p_max = preds.filter(like="p_").max(axis=1)
    start = c[("gradient", "deletion", 0.0)]
    assert p_max.min() - 1e-6 <= start <= p_max.max() + 1e-6
    for method in ("gradient", "random"):
        assert c[(method, "deletion", 0.0)] == pytest.approx(start, abs=1e-6)
        assert c[(method, "deletion", 1.0)] == pytest.approx(c[(method, "insertion", 0.0)])
        assert c[(method, "insertion", 1.0)] == pytest.approx(start, abs=1e-6)


def test_faithfulness_all_subjects_start_matches_predictions(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = faithfulness_run(copy, ["gradient"], steps=1, device="cpu", progress=False)
    curves = pd.read_csv(path.with_name("faithfulness_curves.tsv"), sep="\t")
    start = curves.query("method == 'gradient' and mode == 'deletion' and fraction == 0")
    preds = pd.read_csv(run_dir / "predictions.tsv", sep="\t")
    expected = preds.filter(like="p_").max(axis=1).mean()
    assert start["probability"].item() == pytest.approx(expected, abs=1e-5)
    assert pd.read_csv(path, sep="\t")["n_subjects"].eq(len(preds)).all()


def test_cli_commands(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli_faithfulness.add_parser(sub)
    cli_masked_eval.add_parser(sub)
    args = parser.parse_args(
        ["faithfulness", str(copy), "--n-subjects", "3", "--steps", "2", "--quiet",
         "--device", "cpu", "--fill", "zero"]
    )  # fmt: skip
    assert args.run(args) == 0
    assert "deletion" in capsys.readouterr().out
    args = parser.parse_args(["masked-eval", str(copy), "--quiet", "--device", "cpu"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "conjoined" in out and (copy / "analysis/masked_eval.tsv").is_file()
