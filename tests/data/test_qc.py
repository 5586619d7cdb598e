"""QC of registered images: cohort-mean correlations, outlier flags, the mosaic figure."""

from __future__ import annotations

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pytest

from brainmaps.data.preprocess import mni_brain_mask, mni_grid
from brainmaps.data.qc import (
    cohort_mean,
    correlations,
    flag_outliers,
    plot_qc_mosaic,
    qc_correlations,
)
from brainmaps.data.registration import template_on_grid
from brainmaps.exceptions import ConfigError, ShapeError

GRID = mni_grid((46, 55, 46))  # 4 mm


@pytest.fixture(scope="module")
def cohort():
    """Seven well-registered images (noise, gain) and one shifted by 12 mm (the last)."""
    rng = np.random.default_rng(1)
    template = template_on_grid(GRID)
    images = [
        (template * rng.uniform(0.8, 1.2) + rng.normal(0, 0.05, GRID.shape)).astype(np.float32)
        for _ in range(8)
    ]
    images[-1] = np.roll(images[-1], 3, axis=1)  # misregistered: 3 voxels = 12 mm
    return images


def test_cohort_mean_and_correlations_known_answers():
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    a = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    mean = cohort_mean([a, 3 * a], mask)
    np.testing.assert_allclose(mean[mask], 2 * a[mask])
    assert not mean[~mask].any()
    values = correlations([a, -a + 5, np.ones_like(a)], a, mask)
    np.testing.assert_allclose(values, [1.0, -1.0, 0.0])
    with pytest.raises(ShapeError, match="does not match the mask"):
        correlations([np.ones((3, 3, 3))], a, mask)


def test_flag_outliers_mean_minus_two_sd():
    values = [0.95, 0.96, 0.94, 0.95, 0.97, 0.96, 0.95, 0.60]
    np.testing.assert_array_equal(flag_outliers(values), [False] * 7 + [True])
    # One outlier among n values lies at most (n - 1) / sqrt(n) SD away: never with n <= 5.
    assert not flag_outliers([0.95, 0.96, 0.94, 0.95, 0.10]).any()
    assert not flag_outliers([0.3]).any()
    assert flag_outliers(values, n_sd=1.0).sum() == 1


def test_qc_flags_the_misregistered_image(cohort, tmp_path):
    mask = mni_brain_mask(GRID)
    paths = []
    for i, data in enumerate(cohort):  # half as files, half in memory: both are streamed
        if i % 2:
            paths.append(tmp_path / f"s{i}.nii.gz")
            nib.save(GRID.to_img(data), paths[-1])
        else:
            paths.append(GRID.to_img(data))
    values = qc_correlations(paths, mask)
    assert values[:-1].min() > 0.9 and values[-1] < 0.7  # 0.91-0.94 and 0.57 measured
    np.testing.assert_array_equal(flag_outliers(values), [False] * 7 + [True])


def _red_pixels(path) -> int:
    rgb = mpimg.imread(path)[..., :3]
    return int((rgb[..., 0] - rgb[..., 1:].max(axis=-1) > 0.5).sum())


def test_mosaic_is_written_atomically_with_red_titles_for_flagged(cohort, tmp_path):
    imgs = [GRID.to_img(d) for d in cohort]
    mask = mni_brain_mask(GRID)
    plain, marked = tmp_path / "plain.png", tmp_path / "marked.png"
    plot_qc_mosaic(imgs, plain, titles=[f"s{i}" for i in range(8)], contour=mask, ncols=4)
    flagged = [False] * 7 + [True]
    plot_qc_mosaic(imgs, marked, titles=[f"s{i}" for i in range(8)], flagged=flagged, contour=mask)
    assert mpimg.imread(plain).shape[:2] == (2 * 144, 4 * 128)  # 2 x 4 panels at 80 dpi
    assert _red_pixels(plain) == 0 < _red_pixels(marked)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marked.png", "plain.png"]
    with pytest.raises(ConfigError, match="at least one image"):
        plot_qc_mosaic([], tmp_path / "none.png")


def test_mosaic_slices_the_requested_plane(tmp_path):
    data = np.zeros(GRID.shape, np.float32)
    k = round(float(np.linalg.solve(GRID.affine, [0, 0, 10.0, 1])[2]))
    data[10:30, 10:40, k] = 1.0  # only the z = 10 mm plane is bright
    plot_qc_mosaic([GRID.to_img(data)], tmp_path / "a.png", coord=10.0)
    plot_qc_mosaic([GRID.to_img(data)], tmp_path / "b.png", coord=-30.0)
    bright = [
        (mpimg.imread(tmp_path / n)[..., :3].mean(-1) > 0.9).sum() for n in ("a.png", "b.png")
    ]
    assert bright[0] > 100 and bright[1] == 0
