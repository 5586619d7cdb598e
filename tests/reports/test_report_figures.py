"""Report figures: colour scales with known answers, and PNGs of the expected size."""

from __future__ import annotations

import io

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.exceptions import ShapeError
from brainmaps.reports import figures

AFFINE = np.diag([8.0, 8.0, 8.0, 1.0])
AFFINE[:3, 3] = [-80.0, -100.0, -60.0]


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return mpimg.imread(io.BytesIO(png), format="png")


def _img(data) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data, dtype=np.float32), AFFINE)


@pytest.fixture
def mask():
    data = np.zeros((20, 24, 20), dtype=np.uint8)
    data[2:18, 2:22, 2:18] = 1
    return _img(data)


def test_map_scale_known_answers(mask):
    inside = np.asarray(mask.dataobj) > 0
    values = np.zeros(inside.shape)
    values[inside] = np.linspace(0.0, 1.0, inside.sum())
    values[0, 0, 0] = 1000.0  # outside the brain: ignored
    values[10, 12, 9] = 5.0  # the peak
    scale = figures.map_scale({"a": _img(values)}, mask)
    in_brain = values[inside]
    assert scale.vmax == pytest.approx(np.percentile(in_brain, 99))
    assert scale.threshold == pytest.approx(np.percentile(in_brain, 75))
    assert not scale.signed
    assert scale.cut_coords == pytest.approx((0.0, -4.0, 12.0))  # world of voxel (10,12,9)
    signed = figures.map_scale({"a": _img(values - 0.5)}, mask)
    assert signed.signed


def test_map_scale_rejects_maps_on_another_grid(mask):
    with pytest.raises(ShapeError, match="run grid"):
        figures.map_scale({"a": _img(np.zeros((5, 5, 5)))}, mask)


def test_class_maps_figure_is_a_small_png(mask):
    ijk = np.indices((20, 24, 20)).transpose(1, 2, 3, 0)
    blob = np.exp(-((ijk - [10, 12, 10]) ** 2).sum(-1) / 6.0)
    maps = {"a": _img(blob), "b": _img(0.5 * blob), "conjoined": _img(1.5 * blob)}
    png = figures.plot_class_maps(maps, mask)
    pixels = _pixels(png)
    assert pixels.shape[:2] == (round(3.3 * figures.DPI), round(3 * 4.6 * figures.DPI))
    assert len(png) < 400_000
    colour = pixels[..., :3]
    reddish = (colour[..., 0] > 0.8) & (colour[..., 2] < 0.3)  # the 'hot' blob is drawn
    assert reddish.sum() > 100


def test_roc_figure_handles_folds_with_one_class():
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "fold": np.repeat([0, 1, 2], 10),
        "label": ["a", "b"] * 10 + ["a"] * 10,
        "p_a": rng.random(30),
    })  # fmt: skip
    rows["p_b"] = 1 - rows["p_a"]
    pixels = _pixels(figures.plot_roc(rows, ("a", "b")))
    assert pixels.shape[:2] == (round(4.4 * figures.DPI), round(5.2 * figures.DPI))
    three = rows.assign(label=["a", "b", "c"] * 10, p_c=0.2)
    assert _pixels(figures.plot_roc(three, ("a", "b", "c"))).std() > 0.01


def test_other_figures_render():
    rows = pd.DataFrame({"fold": [0, 0, 1, 1], "y": [1.0, 2, 3, 4], "prediction": [1.5, 2, 2, 5]})
    assert _pixels(figures.plot_regression(rows)).std() > 0.01
    matrix = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["x", "y"], columns=["x", "y"])
    wide = _pixels(figures.plot_dice_matrices({"conjoined": matrix, "a": matrix}))
    assert wide.shape[1] > 1.8 * wide.shape[0]  # two panels side by side
    curves = pd.DataFrame({
        "method": ["g"] * 4 + ["random"] * 4, "mode": ["deletion", "insertion"] * 4,
        "fraction": [0, 0, 1, 1] * 2, "probability": [0.9, 0.1, 0.1, 0.9] * 2,
    })  # fmt: skip
    assert _pixels(figures.plot_faithfulness(curves)).std() > 0.01
    roc = pd.DataFrame({"method": ["g"] * 3, "fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]})
    assert _pixels(figures.plot_localisation_roc(roc)).std() > 0.01
