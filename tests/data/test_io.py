"""Tests of brainmaps.data.io: loading, validation and atomic saving of NIfTI files."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest

from brainmaps.data.io import check_volume, load_img, save_array, save_img
from brainmaps.exceptions import ImageError


@pytest.fixture
def write_nifti(tmp_path):
    """Factory ``write_nifti(name, data=None, affine=None) -> Path`` in ``tmp_path``."""

    def write(name="img.nii.gz", data=None, affine=None):
        if data is None:
            data = np.random.default_rng(0).uniform(1, 10, size=(8, 9, 10)).astype(np.float32)
        affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
        nib.save(nib.Nifti1Image(np.asarray(data), affine), tmp_path / name)
        return tmp_path / name

    return write


def test_load_img_float32_keeps_affine_and_values(write_nifti):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.array([[0, 0, 2, -10], [-1, 0, 0, 20], [0, 3, 0, -5], [0, 0, 0, 1.0]])
    img = load_img(write_nifti("a.nii.gz", data, affine))
    assert img.get_data_dtype() == np.float32
    assert isinstance(img.dataobj, np.ndarray) and img.dataobj.dtype == np.float32
    np.testing.assert_array_equal(img.get_fdata(), data)
    np.testing.assert_allclose(img.affine, affine)


def test_load_img_applies_scaling(tmp_path):
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    img.header.set_slope_inter(2.0, 1.0)
    nib.save(img, tmp_path / "scaled.nii")
    out = load_img(tmp_path / "scaled.nii")
    np.testing.assert_allclose(out.get_fdata(), np.arange(24).reshape(2, 3, 4) * 2 + 1)


def test_single_volume_4d_is_squeezed(write_nifti):
    data = np.random.default_rng(0).random((4, 5, 6, 1, 1)).astype(np.float32)
    img = load_img(write_nifti("one.nii.gz", data))
    assert img.shape == (4, 5, 6)
    np.testing.assert_array_equal(img.get_fdata(), data[..., 0, 0])


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.nii\.gz does not exist"):
        load_img(tmp_path / "nope.nii.gz")


def test_directory(tmp_path):
    folder = tmp_path / "dir.nii.gz"
    folder.mkdir()
    with pytest.raises(ImageError, match=r"dir\.nii\.gz is a directory"):
        load_img(folder)


def test_wrong_suffix(tmp_path):
    path = tmp_path / "scan.mgz"
    path.write_bytes(b"x")
    with pytest.raises(ImageError, match=r"scan\.mgz.*'\.nii' or '\.nii\.gz'"):
        load_img(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_unreadable(write_nifti):
    path = write_nifti("locked.nii.gz")
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match=r"locked\.nii\.gz is not readable"):
            load_img(path)
    finally:
        path.chmod(0o644)


def test_unreadable_simulated(write_nifti, monkeypatch):
    path = write_nifti("locked.nii.gz")
    monkeypatch.setattr("brainmaps.data.io.os.access", lambda *args: False)
    with pytest.raises(ImageError, match=r"locked\.nii\.gz is not readable.*chmod"):
        load_img(path)


def test_invalid_affine(tmp_path):
    img = nib.Nifti1Image(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32), None)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # nibabel refuses via affine=
    path = tmp_path / "flat_affine.nii.gz"
    nib.save(img, path)
    with pytest.raises(ImageError, match=r"flat_affine\.nii\.gz has an invalid affine"):
        load_img(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ImageError, match=r"noise\.nii\.gz could not be read as NIfTI"):
        load_img(path)


def test_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    with pytest.raises(ImageError, match=r"garbage\.nii\.gz could not be read"):
        load_img(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated(write_nifti, name):
    path = write_nifti(name, np.random.default_rng(1).random((16, 16, 16)))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')} could not be read.*corrupt"):
        load_img(path)


def test_several_volumes(write_nifti):
    path = write_nifti("bold.nii.gz", np.ones((4, 4, 4, 3)) + np.arange(3))
    with pytest.raises(ImageError, match=r"bold\.nii\.gz is 4D .*3 volumes.*index_img"):
        load_img(path)


def test_two_dimensional(write_nifti):
    path = write_nifti("slice.nii.gz", np.random.default_rng(0).random((6, 7)))
    with pytest.raises(ImageError, match=r"slice\.nii\.gz has 2 dimension"):
        load_img(path)


def test_nan_and_inf_counted(write_nifti):
    data = np.ones((5, 5, 5), dtype=np.float32)
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = 5
    with pytest.raises(ImageError, match=r"nan\.nii\.gz holds 3 NaN and 1 infinite voxel"):
        load_img(write_nifti("nan.nii.gz", data))


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_constant_image(write_nifti, value):
    path = write_nifti("flat.nii.gz", np.full((5, 5, 5), value, dtype=np.float32))
    with pytest.raises(
        ImageError, match=rf"flat\.nii\.gz is constant \(every voxel equals {value}"
    ):
        load_img(path)


def test_check_volume_names_parameter():
    with pytest.raises(ImageError, match=r"my_map has shape \(3, 3\)"):
        check_volume(np.ones((3, 3)), "my_map")
    data = np.arange(8.0).reshape(2, 2, 2)
    assert check_volume(data) is data


def test_save_img_round_trip_compressed(tmp_path):
    data = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    out = save_img(nib.Nifti1Image(data, affine), tmp_path / "sub" / "x.nii.gz")
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # really gzip-compressed
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.nii.gz"]  # no temp left
    back = load_img(out)
    np.testing.assert_array_equal(back.get_fdata(), data)
    np.testing.assert_allclose(back.affine, affine)


def test_save_array_bool_and_plain_nii(tmp_path):
    mask = np.zeros((3, 4, 5), dtype=bool)
    mask[1, 2, 3] = True
    out = save_array(mask, np.eye(4), tmp_path / "mask.nii")
    assert out.read_bytes()[:2] != b"\x1f\x8b"
    img = nib.load(out)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(img.dataobj), mask)


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ImageError, match=r"out\.png must end with"):
        save_array(np.ones((2, 2, 2)), np.eye(4), tmp_path / "out.png")
