"""Localisation scores against planted masks: oracle, chance, anti-oracle, other grids."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis.localisation import (
    localisation_roc,
    localisation_run,
    localisation_scores,
    pointing_game,
)
from brainmaps.exceptions import ConfigError

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-40, -48, -40]
SHAPE = (20, 24, 20)


def _img(data, affine=AFFINE):
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)


@pytest.fixture
def planted():
    truth = np.zeros(SHAPE)
    truth[4:8, 5:9, 4:8] = 1
    brain = np.zeros(SHAPE)
    brain[1:-1, 1:-1, 1:-1] = 1
    return truth, brain


def test_oracle_random_and_anti_oracle(planted):
    truth, brain = planted
    oracle = localisation_scores(_img(truth * 5.0), _img(truth), _img(brain))
    assert oracle["roc_auc"] == pytest.approx(1.0)
    assert oracle["relevance_mass"] == pytest.approx(1.0)
    assert oracle["pointing_game"] == 1.0
    assert oracle["mass_baseline"] == pytest.approx(truth.sum() / brain.sum())
    rng = np.random.default_rng(0)
    chance = localisation_scores(_img(rng.random(SHAPE)), _img(truth), _img(brain))
    assert abs(chance["roc_auc"] - 0.5) < 0.1
    assert chance["relevance_mass"] == pytest.approx(chance["mass_baseline"], abs=0.02)
    anti = localisation_scores(_img(1.0 - truth), _img(truth), _img(brain))
    assert anti["roc_auc"] == pytest.approx(0.0)
    assert anti["relevance_mass"] == 0.0


def test_negative_evidence_counts_unless_signed(planted):
    truth, brain = planted
    negative = -3.0 * truth
    assert localisation_scores(_img(negative), _img(truth), _img(brain))["roc_auc"] == 1.0
    signed = localisation_scores(_img(negative), _img(truth), _img(brain), absolute=False)
    assert signed["roc_auc"] == pytest.approx(0.0)


def test_truth_on_a_finer_flipped_grid_is_resampled_through_affines(planted):
    truth, brain = planted
    # the planted cube at 2 mm, with the x axis stored the other way round
    fine = np.zeros((40, 48, 40))
    fine[8:16, 10:18, 8:16] = 1
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    # fine voxel 2i lies 0.5 mm from coarse voxel i's centre (no nearest-neighbour ties)
    affine[:3, 3] = [-40.5 + 2 * 39, -48.5, -40.5]
    scores = localisation_scores(_img(truth), _img(fine[::-1], affine), _img(brain))
    assert scores["roc_auc"] == pytest.approx(1.0)


def test_pointing_game_tolerance(planted):
    truth, brain = planted
    values = np.zeros(SHAPE)
    values[9, 7, 6] = 1.0  # two voxels (8 mm) beyond the cube's last x index, 7
    assert not pointing_game(_img(values), _img(truth), _img(brain))
    assert pointing_game(_img(values), _img(truth), _img(brain), tolerance_mm=9.0)
    assert not pointing_game(_img(values), _img(truth), _img(brain), tolerance_mm=7.0)


def test_roc_curve_and_bad_truth(planted):
    truth, brain = planted
    curve = localisation_roc(_img(truth), _img(truth), _img(brain))
    assert curve["tpr"].iloc[-1] == 1.0 and curve["tpr"].iloc[1] == 1.0
    with pytest.raises(ConfigError, match="affines"):
        localisation_scores(_img(truth), _img(np.zeros(SHAPE)), _img(brain))


def test_localisation_run_on_a_tiny_run(tiny_run, tiny_cohort, tmp_path):
    from brainmaps.data.preprocess import resample_to_grid
    from brainmaps.run.folder import open_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = open_run(run_dir)
    truth = resample_to_grid(nib.load(tiny_cohort / "ground_truth_mask.nii.gz"), run.grid, order=0)
    folder = run_dir / "maps" / "oracle"
    folder.mkdir(parents=True)
    for name in (*run.classes, "conjoined"):
        nib.save(run.grid.to_img(truth.astype(np.float32)), folder / f"mean_{name}.nii.gz")
    nib.save(run.grid.to_img(truth.astype(np.float32)), folder / "sub-a.nii.gz")
    pd.DataFrame({"subject": ["a"], "file": ["sub-a.nii.gz"]}).to_csv(
        folder / "maps.tsv", sep="\t", index=False
    )
    table = pd.read_csv(localisation_run(run_dir), sep="\t")
    assert list(table["map"]) == [*run.classes, "conjoined", "subjects"]
    assert (table["roc_auc"] == 1.0).all()
    assert (table["pointing_game"] == 1.0).all()
    roc = pd.read_csv(run_dir / "analysis" / "localisation_roc.tsv", sep="\t")
    assert set(roc["method"]) == {"oracle"}
