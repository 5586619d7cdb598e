"""Explaining a whole run: out-of-fold models, NIfTI output, class means, resume, and
localisation of the planted effect."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from brainmaps.attribution.cohort import explain_run
from brainmaps.cli.main import main
from brainmaps.data.io import load_img
from brainmaps.data.preprocess import mni_brain_mask, resample_to_grid
from brainmaps.data.run_folder import open_run
from brainmaps.exceptions import ConfigError

METHODS = ["grad_cam", "guided_backprop", "meaningful_perturbation"]


@pytest.fixture(scope="module")
def explained(tiny_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("explain") / "run"
    shutil.copytree(tiny_run, run_dir)
    tables = explain_run(run_dir, METHODS, batch_size=8, progress=False)
    return run_dir, tables


def test_every_subject_gets_a_map_from_its_out_of_fold_model(explained):
    run_dir, tables = explained
    cohort = pd.read_csv(run_dir / "cohort.tsv", sep="\t", dtype={"subject": str})
    expected = dict(zip(cohort["subject"], cohort["test_fold"], strict=True))
    for method in METHODS:
        table = tables[method]
        assert len(table) == len(cohort)
        assert dict(zip(table["subject"], table["fold"], strict=True)) == expected
        on_disk = pd.read_csv(run_dir / "maps" / method / "maps.tsv", sep="\t", dtype=str)
        assert len(on_disk) == len(cohort)


def test_maps_are_nifti_on_the_model_grid_with_class_means(explained):
    run_dir, _ = explained
    run = open_run(run_dir)
    for method in METHODS:
        folder = run_dir / "maps" / method
        img = nib.load(folder / "sub-0001.nii.gz")
        assert img.shape == run.grid.shape
        np.testing.assert_allclose(img.affine, run.grid.affine)
        means = {c: np.asarray(nib.load(folder / f"mean_{c}.nii.gz").dataobj) for c in run.classes}
        conjoined = np.asarray(nib.load(folder / "mean_conjoined.nii.gz").dataobj)
        np.testing.assert_allclose(conjoined, sum(means.values()), rtol=1e-5, atol=1e-7)
        patients = run.table.loc[run.table["label"] == "patient", "subject"]
        by_hand = np.mean(
            [np.asarray(nib.load(folder / f"sub-{s}.nii.gz").dataobj) for s in patients], axis=0
        )
        np.testing.assert_allclose(means["patient"], by_hand, rtol=1e-5, atol=1e-7)


def _localisation_auc(run_dir, method, tiny_cohort) -> float:
    run = open_run(run_dir)
    truth = resample_to_grid(load_img(tiny_cohort / "ground_truth_mask.nii.gz"), run.grid, 0)
    brain = mni_brain_mask(run.grid)
    mean = np.asarray(nib.load(run_dir / "maps" / method / "mean_patient.nii.gz").dataobj)
    return roc_auc_score(truth[brain] > 0.5, np.abs(mean[brain]))


@pytest.mark.parametrize("method", METHODS)
def test_class_mean_maps_find_the_planted_effect(explained, tiny_cohort, method):
    """Inside the brain, voxels of the planted regions must score higher than the rest.

    0.5 is chance. The bound 0.75 is met with margin by every method on this cohort
    (see the values printed on failure) and fails for maps that ignore the effect: a
    map of the input intensities scores about 0.5.
    """
    auc = _localisation_auc(explained[0], method, tiny_cohort)
    assert auc >= 0.75, f"{method}: ROC AUC {auc:.3f}"


def test_resume_recomputes_only_missing_maps(explained):
    run_dir, _ = explained
    folder = run_dir / "maps" / "grad_cam"
    victim = folder / "sub-0002.nii.gz"
    kept = folder / "sub-0001.nii.gz"
    before = kept.stat().st_mtime_ns
    data = np.asarray(nib.load(victim).dataobj).copy()
    victim.unlink()
    table = explain_run(run_dir, ["grad_cam"], progress=False)["grad_cam"]
    assert victim.is_file() and len(table) == 40
    assert kept.stat().st_mtime_ns == before
    np.testing.assert_allclose(np.asarray(nib.load(victim).dataobj), data, rtol=1e-5, atol=1e-7)


def test_cli_explain_with_options_and_native_space(explained, capsys):
    run_dir, _ = explained
    code = main(
        [
            "explain",
            str(run_dir),
            "--methods",
            "gradient,occlusion",
            "--set",
            "occlusion.window_mm=24",
            "--set",
            "occlusion.stride_mm=24",
            "--target",
            "true",
            "--native-space",
            "--quiet",
        ]
    )
    assert code == 0
    assert "gradient: 40 maps" in capsys.readouterr().out
    run = open_run(run_dir)
    source = nib.load(run.table["path"].iloc[0])
    native = nib.load(run_dir / "maps" / "gradient" / "native" / "sub-0001.nii.gz")
    assert native.shape == source.shape
    np.testing.assert_allclose(native.affine, source.affine)


def test_bad_requests_are_clear(explained, capsys):
    run_dir, _ = explained
    with pytest.raises(ConfigError, match="grad_cam"):
        explain_run(run_dir, ["gradcam"], progress=False)
    with pytest.raises(ConfigError, match="control, patient"):
        explain_run(run_dir, ["gradient"], target="healthy", progress=False)
    with pytest.raises(ConfigError, match="unknown option"):
        explain_run(run_dir, ["gradient"], options={"gradient": {"sigma": 2}}, progress=False)
    assert main(["explain", str(run_dir), "--set", "oops"]) == 2
    assert "METHOD.OPTION=VALUE" in capsys.readouterr().err
