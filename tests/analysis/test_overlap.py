"""Overlap between maps: Dice / Jaccard on hand-made masks, the background trap, thresholds."""

from __future__ import annotations

import shutil
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis import (
    binarize,
    compare_maps,
    compare_run,
    dice,
    jaccard,
    map_correlation,
)
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ShapeError

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-40, -48, -40]


def _img(data, affine=AFFINE):
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)


def test_analysis_is_torch_free():
    import subprocess

    code = "import sys, brainmaps.analysis; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_dice_and_jaccard_known_counts():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[0, 0, :10] = True  # 10 voxels
    b[0, 0, 5:] = True  # 5 voxels, all inside a
    b[1, 0, :5] = True  # 5 more outside a
    assert dice(a, b) == pytest.approx(2 * 5 / 20)
    assert jaccard(a, b) == pytest.approx(5 / 15)
    assert dice(a, a) == 1.0 and jaccard(a, a) == 1.0


def test_disjoint_foregrounds_score_zero_not_background_agreement():
    """The papers' code counted agreeing background voxels: disjoint maps scored ~1."""
    a = np.zeros((20, 20, 20), bool)
    b = np.zeros((20, 20, 20), bool)
    a[2:5, 2:5, 2:5] = True
    b[12:15, 12:15, 12:15] = True
    naive_agreement = float((a == b).mean())
    assert naive_agreement > 0.99
    assert dice(a, b) == 0.0
    assert jaccard(a, b) == 0.0


def test_mask_restricts_the_comparison():
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros((6, 6, 6), bool)
    a[0] = b[0] = True  # agree only outside the mask
    a[3, 0, 0] = b[3, 0, 0] = True  # agree inside
    a[4, 0, 0] = True
    mask = np.zeros((6, 6, 6), bool)
    mask[2:] = True
    assert dice(a, b, mask) == pytest.approx(2 / 3)
    with pytest.warns(BrainmapsWarning, match="empty"):
        assert np.isnan(dice(a & ~mask & False, b & False))
    with pytest.raises(ShapeError, match="one grid"):
        dice(a, b[:5])


def test_top_k_percent_keeps_exactly_k_voxels_of_the_mask():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 12, 10))
    mask = np.zeros(values.shape, bool)
    mask[1:9, 1:11, 1:9] = True
    out = binarize(_img(values), mask, "top10%")
    assert out.sum() == round(mask.sum() * 0.1)
    assert not out[~mask].any()
    kept = np.abs(values[out]).min()
    assert kept >= np.abs(values[mask & ~out]).max()
    signed = binarize(_img(values), mask, "top10%", absolute=False)
    assert values[signed].min() >= values[mask & ~signed].max()


def test_percentile_absolute_and_paper_thresholds():
    values = np.arange(1000, dtype=float).reshape(10, 10, 10)
    assert binarize(_img(values), None, "p90").sum() == 100  # above 899.1
    assert binarize(_img(values), None, 899.5).sum() == 100
    # paper: min-max scaled, Grad-CAM at 0.65, guided backprop at 0.04
    scaled = (values - 0) / 999
    assert binarize(_img(values), None, "paper", method="grad_cam").sum() == (scaled > 0.65).sum()
    assert (
        binarize(_img(values), None, "paper", method="guided_backprop").sum()
        == (scaled > 0.04).sum()
    )
    with pytest.raises(ConfigError, match="method="):
        binarize(_img(values), None, "paper", method="gradient")
    with pytest.raises(ConfigError, match="threshold"):
        binarize(_img(values), None, "ten percent")


def test_maps_are_brought_together_through_affines_not_shapes():
    """The same map stored with its x axis flipped must match itself (Dice 1)."""
    rng = np.random.default_rng(1)
    data = rng.random((10, 12, 10))
    flip = AFFINE.copy()
    flip[0, 0] = -4.0
    flip[0, 3] = AFFINE[0, 3] + 4.0 * 9
    flipped = _img(data[::-1], flip)
    scores = compare_maps(_img(data), flipped)
    assert scores["dice"] == pytest.approx(1.0)
    assert scores["spearman"] == pytest.approx(1.0)
    by_shape = compare_maps(_img(data), _img(data[::-1]))
    assert by_shape["dice"] < 0.5


def test_correlations_known_answers():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(8, 8, 8))
    rho, r = map_correlation(_img(a), _img(2 * a + 1))
    assert rho == pytest.approx(1.0) and r == pytest.approx(1.0)
    rho, r = map_correlation(_img(a), _img(-a))
    assert rho == pytest.approx(-1.0)
    rho, _ = map_correlation(_img(a), _img(-a), absolute=True)
    assert rho == pytest.approx(1.0)


def _fake_method(run_dir, method, data_by_class, grid):
    folder = run_dir / "maps" / method
    folder.mkdir(parents=True)
    for name, data in data_by_class.items():
        nib.save(grid.to_img(data.astype(np.float32)), folder / f"mean_{name}.nii.gz")
    pd.DataFrame({"subject": [], "file": []}).to_csv(folder / "maps.tsv", sep="\t", index=False)


def test_compare_run_writes_the_matrix(tiny_run, tmp_path):
    from brainmaps.run.folder import open_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = open_run(run_dir)
    rng = np.random.default_rng(3)
    base = {n: rng.random(run.grid.shape) for n in (*run.classes, "conjoined")}
    _fake_method(run_dir, "alpha", base, run.grid)
    _fake_method(run_dir, "beta", {n: 3 * v for n, v in base.items()}, run.grid)
    _fake_method(run_dir, "gamma", {n: -v for n, v in base.items()}, run.grid)
    table = pd.read_csv(compare_run(run_dir, absolute=False), sep="\t")
    assert set(table["map"]) == {*run.classes, "conjoined"}
    assert table["map"].iloc[0] == "conjoined"
    assert len(table) == 3 * 3
    pair = table.set_index(["map", "method_a", "method_b"])
    assert pair.loc[("conjoined", "alpha", "beta"), "dice"] == pytest.approx(1.0)
    assert pair.loc[("conjoined", "alpha", "gamma"), "dice"] == pytest.approx(0.0)
    assert pair.loc[("conjoined", "alpha", "gamma"), "spearman"] == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match="no maps"):
        compare_run(run_dir, ["alpha", "delta"])
