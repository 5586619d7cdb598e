"""Regional volumes and means: atlas resampled through the affines, label tables read."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.morphometry import (
    morphometry_table,
    otsu_threshold,
    read_atlas_labels,
    run_morphometry,
)
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ImageError
from conftest import shared_data

LABELS = pd.DataFrame({"index": [1, 2], "name": ["left", "right"]})


def _atlas() -> nib.Nifti1Image:
    """1 mm atlas with a flipped x axis: label 1 where world x < 0, 2 where x >= 0."""
    i = np.arange(20)
    x_world = 9.0 - i  # affine below maps voxel i to x = 9 - i
    data = np.broadcast_to(np.where(x_world < 0, 1, 2)[:, None, None], (20, 20, 20))
    affine = np.array([[-1.0, 0, 0, 9], [0, 1, 0, -10], [0, 0, 1, -10], [0, 0, 0, 1]])
    return nib.Nifti1Image(data.astype(np.int16), affine)


def _image(values: np.ndarray) -> nib.Nifti1Image:
    """2 mm image covering world [-10, 8] on each axis, RAS."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -10.0
    return nib.Nifti1Image(values.astype(np.float32), affine)


def test_volumes_and_means_through_the_affines():
    values = np.zeros((10, 10, 10))
    xi = np.arange(10)[:, None, None]  # image voxel a sits at world x = -10 + 2a
    yi = np.arange(10)[None, :, None]
    values += 1.0 + 2.0 * (xi >= 5) + 1.0 * (yi >= 5)  # left: {1, 2}, right: {3, 4}
    table = morphometry_table([_image(values)], _atlas(), LABELS, subjects=["s1"], threshold=1.5)
    row = table.iloc[0]
    # left half: 5 x 10 x 10 voxels of 8 mm^3, half of them above 1.5
    assert row["left_volume"] == pytest.approx(250 * 8.0)
    assert row["right_volume"] == pytest.approx(500 * 8.0)
    assert row["left_mean"] == pytest.approx(1.5) and row["right_mean"] == pytest.approx(3.5)
    assert list(table.columns) == [
        "subject", "left_volume", "left_mean", "right_volume", "right_mean"
    ]  # fmt: skip


def test_default_threshold_is_otsu_and_arrays_with_affines_are_accepted():
    values = np.where(np.arange(10)[None, :, None] >= 5, 10.0, 1.0) * np.ones((10, 10, 10))
    image = _image(values)
    table = morphometry_table(
        [(values, image.affine), image], _atlas(), LABELS, subjects=["a", "b"], sessions=["1", ""]
    )
    assert table["session"].tolist() == ["1", ""]
    assert table["left_volume"].tolist() == [250 * 8.0, 250 * 8.0]


def test_segmentation_mode_weights_by_probability():
    probabilities = np.full((10, 10, 10), 0.25)
    table = morphometry_table(
        [_image(probabilities)], _atlas(), LABELS, subjects=["s"], mode="segmentation"
    )
    assert table.loc[0, "right_volume"] == pytest.approx(0.25 * 500 * 8.0)
    assert table.loc[0, "right_mean"] == pytest.approx(0.25)
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        morphometry_table(
            [_image(probabilities * 8)], _atlas(), LABELS, subjects=["s"], mode="segmentation"
        )


def test_regions_outside_the_grid_warn():
    labels = pd.DataFrame({"index": [1, 2, 3], "name": ["left", "right", "absent"]})
    with pytest.warns(BrainmapsWarning, match="absent"):
        table = morphometry_table([_image(np.ones((10, 10, 10)))], _atlas(), labels, subjects=["s"])
    assert table.loc[0, "absent_volume"] == 0.0 and np.isnan(table.loc[0, "absent_mean"])


def test_otsu_threshold_separates_two_modes():
    values = np.concatenate([np.zeros(100), np.full(100, 10.0)])
    assert 0.0 < otsu_threshold(values) <= 10.0
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 500), rng.normal(8, 1, 500)])
    assert 2.0 < otsu_threshold(values) < 6.0


def test_label_tables(tmp_path):
    path = tmp_path / "atlas.csv"
    path.write_text("label,name\n1,Left Hippocampus\n2,Left Hippocampus\n")
    table = read_atlas_labels(path)
    assert table["index"].tolist() == [1, 2]
    assert table["name"].tolist() == ["Left_Hippocampus", "Left_Hippocampus_2"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("value\tregion_code\n1\tA\n")
    with pytest.raises(ConfigError, match="name column"):
        read_atlas_labels(bad)


@pytest.mark.parametrize("name", ["brainnetome246", "harvard-oxford-sub", "jhu-icbm-dti-81"])
def test_shared_atlas_tables_are_read_as_they_are(name):
    table = read_atlas_labels(shared_data("atlases", f"{name}.tsv"))
    assert table["index"].min() >= 1 and table["name"].is_unique
    assert len(table) in (21, 48, 246)


def test_cohort_source_with_or_without_target(tiny_cohort, tmp_path):
    atlas = tmp_path / "atlas.nii.gz"
    gt = nib.load(tiny_cohort / "ground_truth_mask.nii.gz")
    nib.save(nib.Nifti1Image((np.asarray(gt.dataobj) > 0).astype(np.int16), gt.affine), atlas)
    labels = pd.DataFrame({"index": [1], "name": ["effect"]})
    # regional volumes need no label: without a target every scan is measured
    every = run_morphometry(tiny_cohort, atlas, labels, progress=False)
    out = tmp_path / "features.tsv"
    table = run_morphometry(tiny_cohort, atlas, labels, out, target="group", progress=False)
    pd.testing.assert_frame_equal(every, table)
    assert len(table) == 40 and out.is_file()
    written = pd.read_csv(out, sep="\t", dtype={"subject": str})
    assert written["subject"].tolist() == table["subject"].tolist()
    n_voxels = int((np.asarray(gt.dataobj) > 0).sum())
    assert (table["effect_volume"] <= n_voxels * 64.0 + 1e-6).all()  # 4 mm voxels
    assert (table["effect_volume"] > 0).all()
