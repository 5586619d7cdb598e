"""Tests of brainmaps.data.preprocess: the MNI grid, world-space resampling, normalisation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brainmaps.data.preprocess import (
    DEFAULT_GRID_SHAPE,
    MNI_BOX_ORIGIN,
    MNI_BOX_SIZE,
    Grid,
    PreprocessConfig,
    mni_brain_mask,
    mni_grid,
    normalize,
    parse_grid,
    preprocess_img,
    reorient_canonical,
    resample_to_grid,
)
from brainmaps.exceptions import ConfigError, ImageError, ShapeError

BLOB_MM = np.array([30.0, -20.0, 10.0])


@pytest.fixture
def ixi_dev():
    """The shared ixi-dev BIDS dataset (repo_root/../shared/data); skips when absent."""
    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ixi-dev"
    if not (root / "participants.tsv").is_file():
        pytest.skip(f"shared dataset not found at {root}")
    return root


def _rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


# Columns of each matrix: the world direction (mm) of one step along each array axis.
ORIENTATIONS = {
    "RAS_1mm": (np.diag([1.0, 1.0, 1.0]), 32),
    "LPS_2mm": (np.diag([-2.0, -2.0, 2.0]), 20),
    "PSR_2mm_like_ixi": (np.array([[0, 0, 2.0], [-2.0, 0, 0], [0, 2.0, 0]]), 20),
    "flipped_anisotropic": (np.diag([1.2, -1.5, -3.0]), 24),
    "oblique_anisotropic": (_rotation_z(25) @ np.diag([1.5, 1.0, 2.5]), 24),
}


def blob_image(matrix: np.ndarray, n: int, centre_mm=BLOB_MM, sigma_mm=4.0) -> nib.Nifti1Image:
    """An n^3 image whose Gaussian blob is centred at ``centre_mm`` in world space."""
    anchor = (np.array([n, n, n]) - 1) / 2 + np.array([0.3, -0.2, 0.4])  # off the voxel grid
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = centre_mm - matrix @ anchor
    ijk = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1)
    world = ijk @ matrix.T + affine[:3, 3]
    dist2 = ((world - centre_mm) ** 2).sum(axis=-1)
    return nib.Nifti1Image(np.exp(-dist2 / (2 * sigma_mm**2)).astype(np.float32), affine)


def test_default_grid_tiles_mni_box():
    grid = mni_grid()
    assert grid.shape == DEFAULT_GRID_SHAPE == (58, 70, 58)
    np.testing.assert_allclose(grid.voxel_size, [182 / 58, 218 / 70, 182 / 58])
    np.testing.assert_allclose(grid.voxel_size, [3.138, 3.114, 3.138], atol=1e-3)
    half = np.array(grid.voxel_size) / 2
    first = grid.affine @ [0, 0, 0, 1]
    last = grid.affine @ [57, 69, 57, 1]
    np.testing.assert_allclose(first[:3], np.array(MNI_BOX_ORIGIN) + half)
    np.testing.assert_allclose(last[:3], np.array(MNI_BOX_ORIGIN) + MNI_BOX_SIZE - half)
    assert np.all(np.diag(grid.affine)[:3] > 0)  # RAS


def test_grid_is_hashable_and_round_trips():
    grid = mni_grid((10, 12, 10))
    same = Grid((10, 12, 10), grid.affine)
    assert grid == same and hash(grid) == hash(same)
    assert Grid.from_dict(grid.to_dict()) == grid
    changed = grid.affine
    changed[0, 0] = 99  # the property returns a copy
    assert grid.affine[0, 0] != 99
    img = grid.to_img(np.zeros((10, 12, 10), dtype=bool))
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, grid.affine)
    with pytest.raises(ShapeError, match=r"\(9, 12, 10\) does not fit the grid"):
        grid.to_img(np.zeros((9, 12, 10)))
    with pytest.raises(ConfigError, match="singular"):
        Grid((2, 2, 2), np.zeros((4, 4)))


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_blob_lands_on_its_mni_voxel(name):
    matrix, n = ORIENTATIONS[name]
    img = blob_image(matrix, n)
    config = PreprocessConfig(normalization="none")
    out = preprocess_img(img, config)
    assert out.shape == (58, 70, 58) and out.dtype == np.float32
    expected = (np.linalg.inv(config.grid.affine) @ [*BLOB_MM, 1])[:3]
    found = np.array(ndimage.center_of_mass(out))
    np.testing.assert_array_less(np.abs(found - expected), 0.5)
    peak = np.unravel_index(np.argmax(out), out.shape)
    np.testing.assert_array_less(np.abs(np.array(peak) - expected), 1.0)


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_resample_without_reorienting(name):
    matrix, n = ORIENTATIONS[name]
    grid = mni_grid((36, 44, 36))  # ~5 mm voxels
    out = resample_to_grid(blob_image(matrix, n), grid)
    expected = (np.linalg.inv(grid.affine) @ [*BLOB_MM, 1])[:3]
    np.testing.assert_array_less(np.abs(ndimage.center_of_mass(out) - expected), 0.5)


def test_resample_identity_grid_keeps_values():
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 1.5, 1.0])
    affine[:3, 3] = [-5, 4, 2]
    out = resample_to_grid(nib.Nifti1Image(data, affine), Grid((6, 7, 8), affine))
    np.testing.assert_allclose(out, data, atol=1e-6)
    # shifting the grid by one voxel in world space shifts the array; outside is zero
    shifted = affine.copy()
    shifted[0, 3] += 2.0
    out = resample_to_grid(nib.Nifti1Image(data, affine), Grid((6, 7, 8), shifted))
    np.testing.assert_allclose(out[:-1], data[1:], atol=1e-6)
    assert np.all(out[-1] == 0)


def test_trilinear_midpoint():
    data = np.zeros((2, 1, 1), dtype=np.float32)
    data[1] = 10.0
    grid_affine = np.eye(4)
    grid_affine[0, 3] = 0.25  # a quarter of the way from voxel 0 to voxel 1
    out = resample_to_grid(nib.Nifti1Image(data, np.eye(4)), Grid((1, 1, 1), grid_affine))
    assert out[0, 0, 0] == pytest.approx(2.5)


def test_reorient_canonical_keeps_world_positions():
    matrix, n = ORIENTATIONS["PSR_2mm_like_ixi"]
    img = blob_image(matrix, n)
    canon = reorient_canonical(img)
    assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
    peak = np.unravel_index(np.argmax(canon.get_fdata()), canon.shape)
    np.testing.assert_allclose((canon.affine @ [*peak, 1])[:3], BLOB_MM, atol=2.0)


def test_zscore_over_nonzero_voxels():
    data = np.zeros((4, 4, 4), dtype=np.float32)
    data[0, 0, :4] = [1, 2, 3, 4]
    out = normalize(data, "zscore")
    values = out[0, 0, :4]
    np.testing.assert_allclose(values, (np.array([1, 2, 3, 4]) - 2.5) / np.std([1, 2, 3, 4]))
    assert values.mean() == pytest.approx(0, abs=1e-6) and values.std() == pytest.approx(1)
    assert np.count_nonzero(out) == 4  # zeros stay zero


def test_zscore_with_mask_and_minmax():
    data = np.arange(8, dtype=np.float32).reshape(2, 2, 2) + 1
    mask = np.zeros((2, 2, 2), dtype=bool)
    mask[0] = True  # values 1, 2, 3, 4
    out = normalize(data, "zscore", mask=mask)
    np.testing.assert_allclose(out[0].ravel(), (np.arange(1, 5) - 2.5) / np.std([1, 2, 3, 4]))
    assert np.all(out[1] == 0)
    mm = normalize(data, "minmax")
    assert mm.min() == 0 and mm.max() == 1
    np.testing.assert_allclose(mm.ravel(), np.arange(8) / 7)
    np.testing.assert_array_equal(normalize(data, "none"), data)
    np.testing.assert_array_equal(normalize(np.full((2, 2, 2), 3.0), "zscore"), 0)


def test_normalize_rejects_unknown_method():
    with pytest.raises(ConfigError, match=r"normalization must be one of.*'robust'"):
        normalize(np.ones((2, 2, 2)), "robust")


@pytest.mark.parametrize(
    ("text", "shape"),
    [("58x70x58", (58, 70, 58)), ("64", (64, 64, 64)), ("10, 12,14", (10, 12, 14))],
)
def test_parse_grid(text, shape):
    assert parse_grid(text) == shape


@pytest.mark.parametrize("text", ["58x70", "axbxc", "0x70x58", "-1x2x3"])
def test_parse_grid_errors(text):
    with pytest.raises(ConfigError, match=r"58x70x58"):
        parse_grid(text)


def test_preprocess_config_validation_and_dict():
    config = PreprocessConfig.from_dict({"grid_shape": [16, 20, 16], "brain_mask": True})
    assert config.grid_shape == (16, 20, 16) and config.grid == mni_grid((16, 20, 16))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert PreprocessConfig(grid_shape="8x8x8").grid_shape == (8, 8, 8)
    with pytest.raises(ConfigError, match="normalization must be one of"):
        PreprocessConfig(normalization="unit")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['grid'\]"):
        PreprocessConfig.from_dict({"grid": [1, 2, 3]})
    with pytest.raises(ConfigError, match="brain_mask must be true or false"):
        PreprocessConfig(brain_mask="yes")


def test_mni_brain_mask_volume_and_location():
    grid = mni_grid((26, 31, 26))  # 7 mm voxels: quick
    mask = mni_brain_mask(grid)
    assert mask.dtype == bool and mask.shape == grid.shape
    volume_ml = mask.sum() * np.prod(grid.voxel_size) / 1000
    assert 1600 < volume_ml < 2200  # nilearn's MNI152 brain mask is ~1.9 l
    centre = np.round(np.linalg.inv(grid.affine) @ [0, -18, 18, 1]).astype(int)[:3]
    assert mask[tuple(centre)] and not mask[0, 0, 0]
    mask[:] = False  # a copy: the cache is not modified
    assert mni_brain_mask(grid).any()


def test_preprocess_with_brain_mask_zeroes_outside():
    n = 24  # 8 mm voxels from -96 mm: covers the whole MNI box
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    affine[:3, 3] = -96
    data = np.ones((n, n, n), dtype=np.float32) + np.arange(n)
    config = PreprocessConfig(grid_shape=(26, 31, 26), brain_mask=True)
    out = preprocess_img(nib.Nifti1Image(data, affine), config)
    mask = mni_brain_mask(config.grid)
    assert np.all(out[~mask] == 0)
    assert out[mask].mean() == pytest.approx(0, abs=1e-5)
    assert out[mask].std() == pytest.approx(1, abs=1e-4)


def test_preprocess_path_outside_box(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 5000  # far from the MNI box
    path = tmp_path / "far.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((4, 4, 4)), affine), path)
    with pytest.raises(ImageError, match=r"far\.nii\.gz is empty after resampling"):
        preprocess_img(path, PreprocessConfig(grid_shape=(8, 8, 8)))


def test_preprocess_real_ixi_scan(ixi_dev):
    path = sorted(ixi_dev.glob("sub-*/anat/*_T1w.nii.gz"))[0]
    out = preprocess_img(path, PreprocessConfig())
    assert out.shape == (58, 70, 58) and np.isfinite(out).all()
    nonzero = out != 0
    assert nonzero.mean() > 0.3
    assert out[nonzero].mean() == pytest.approx(0, abs=1e-4)
