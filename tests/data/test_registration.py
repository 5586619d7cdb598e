"""Registration to MNI: geometry conversion, transforms, N4, brain mask, known affines."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainmaps.data.preprocess import mni_grid
from brainmaps.data.registration import (
    RegistrationConfig,
    n4_bias_correct,
    register_img,
    rough_brain_mask,
)
from brainmaps.data.transforms import (
    apply_transform,
    nifti_to_sitk,
    read_transform,
    sitk_to_nifti,
    transform_matrix,
    write_transform,
)
from brainmaps.exceptions import ConfigError, ImageError

#: Registration at 4 mm with few levels: ~1 s per scan, sub-millimetre on these images.
FAST = RegistrationConfig(
    template_resolution=4,
    similarity_levels=((2, 4.0), (1, 2.0)),
    affine_levels=((1, 0.0),),
    sampling_percentage=0.2,
)
GRID = mni_grid((46, 55, 46))  # 4 mm output grid
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def template3():
    """nilearn's MNI152 template at 3 mm (skull-stripped, values in [0, 1])."""
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=3)
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)


@pytest.fixture(scope="module")
def brain_points():
    """World (RAS mm) coordinates of brain voxels of the 4 mm template, shape (4, n)."""
    from nilearn.datasets import load_mni152_template

    img = load_mni152_template(resolution=4)
    ijk = np.argwhere(np.asarray(img.dataobj) > 0.2)
    return img.affine @ np.c_[ijk, np.ones(len(ijk))].T


def _mean_error(result, true_ras: np.ndarray, points: np.ndarray) -> float:
    """Mean distance (mm) between where the found and the true transform send brain points."""
    found = transform_matrix(result.transform)
    return float(np.linalg.norm((found @ points - true_ras @ points)[:3], axis=0).mean())


def _known_affine() -> np.ndarray:
    """RAS matrix: rotation (10, -6, 8) deg, scaling up to 5 %, translation (10, -8, 6) mm."""
    matrix = np.eye(4)
    rotation = Rotation.from_euler("xyz", [10, -6, 8], degrees=True).as_matrix()
    matrix[:3, :3] = rotation @ np.diag([1.05, 0.97, 1.03])
    matrix[:3, 3] = [10.0, -8.0, 6.0]
    return matrix


def _reoriented(img: nib.Nifti1Image, how: str) -> nib.Nifti1Image:
    """The same image (same world coordinates) stored with another voxel order."""
    data, affine = np.asarray(img.dataobj), img.affine.copy()
    n = np.array(data.shape) - 1
    if how == "flip_x":
        flip = np.diag([-1.0, 1, 1, 1])
        flip[0, 3] = n[0]
        return nib.Nifti1Image(data[::-1].copy(), affine @ flip)
    if how == "lps":  # stored left-posterior-superior, like ITK/DICOM
        flip = np.diag([-1.0, -1, 1, 1])
        flip[:2, 3] = n[:2]
        return nib.Nifti1Image(data[::-1, ::-1].copy(), affine @ flip)
    if how == "permuted":  # array axes (y, z, x), like many sagittal acquisitions
        perm = np.zeros((4, 4))
        perm[[1, 2, 0, 3], [0, 1, 2, 3]] = 1
        return nib.Nifti1Image(data.transpose(1, 2, 0).copy(), affine @ perm)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["flip_x", "lps", "permuted", "rotated"])
def test_nifti_to_sitk_matches_sitk_reading_the_file(template3, tmp_path, how):
    if how == "rotated":
        img = nib.Nifti1Image(np.asarray(template3.dataobj), _known_affine() @ template3.affine)
    else:
        img = _reoriented(template3, how)
    path = tmp_path / "img.nii.gz"
    nib.save(img, path)
    ours, itk = nifti_to_sitk(img), sitk.ReadImage(str(path), sitk.sitkFloat32)
    np.testing.assert_allclose(ours.GetOrigin(), itk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), itk.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(ours.GetDirection(), itk.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(itk))
    back = sitk_to_nifti(ours)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(img.dataobj))


def test_sheared_affine_is_refused():
    affine = np.eye(4)
    affine[0, 1] = 0.3
    with pytest.raises(ImageError, match="sheared"):
        nifti_to_sitk(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), affine))


def _itk_affine_from_ras(matrix: np.ndarray) -> sitk.AffineTransform:
    lps = LPS @ matrix @ LPS
    return sitk.AffineTransform(lps[:3, :3].ravel().tolist(), lps[:3, 3].tolist())


def test_transform_matrix_converts_lps_to_ras(tmp_path):
    transform = sitk.AffineTransform(3)
    transform.SetCenter((5.0, -3.0, 2.0))
    transform.SetMatrix(Rotation.from_euler("z", 30, degrees=True).as_matrix().ravel())
    transform.SetTranslation((1.0, 2.0, 3.0))
    ras = transform_matrix(transform)
    point = np.array([12.0, -7.0, 20.0])  # RAS
    mapped = np.asarray(transform.TransformPoint(tuple(LPS[:3, :3] @ point)))
    np.testing.assert_allclose(ras[:3, :3] @ point + ras[:3, 3], LPS[:3, :3] @ mapped)
    write_transform(transform, tmp_path / "x.tfm")
    np.testing.assert_allclose(transform_matrix(read_transform(tmp_path / "x.tfm")), ras)
    np.testing.assert_allclose(_itk_affine_from_ras(ras).GetMatrix(), transform.GetMatrix())


def test_read_transform_errors(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_transform(tmp_path / "missing.tfm")
    (tmp_path / "bad.tfm").write_text("not a transform")
    with pytest.raises(ImageError, match=r"bad\.tfm"):
        read_transform(tmp_path / "bad.tfm")


def _blob(centre_ras, shape=(30, 36, 30), voxel=4.0):
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-60.0, -72.0, -60.0]
    ijk = np.indices(shape).reshape(3, -1)
    xyz = (affine[:3, :3] @ ijk + affine[:3, 3:]).reshape(3, *shape)
    dist2 = sum((xyz[i] - centre_ras[i]) ** 2 for i in range(3))
    return nib.Nifti1Image(np.exp(-dist2 / (2 * 8.0**2)).astype(np.float32), affine)


def _centre_of_mass(img) -> np.ndarray:
    com = ndimage.center_of_mass(np.asarray(img.dataobj, dtype=float))
    return (img.affine @ [*com, 1.0])[:3]


def test_apply_transform_moves_a_blob_both_ways(tmp_path):
    matrix = _known_affine()  # MNI -> native (RAS), as a registration would store it
    write_transform(_itk_affine_from_ras(matrix), tmp_path / "t.tfm")
    native_centre = np.array([12.0, -10.0, 8.0])
    native = _blob(native_centre)
    mni = apply_transform(native, tmp_path / "t.tfm", native)
    expected = np.linalg.solve(matrix, [*native_centre, 1.0])[:3]
    np.testing.assert_allclose(_centre_of_mass(mni), expected, atol=0.5)
    back = apply_transform(mni, tmp_path / "t.tfm", native, inverse=True)
    np.testing.assert_allclose(_centre_of_mass(back), native_centre, atol=0.5)
    assert back.shape == native.shape and np.allclose(back.affine, native.affine)
    assert np.asarray(back.dataobj).dtype == np.float32


def test_apply_transform_nearest_keeps_labels_and_grid(tmp_path):
    labels = np.zeros((20, 20, 20), np.int16)
    labels[5:10, 5:10, 5:10], labels[12:16, 4:9, 10:18] = 3, 7
    img = nib.Nifti1Image(labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    shift = np.eye(4)
    shift[:3, 3] = [4.0, 0.0, -2.0]
    out = apply_transform(img, _itk_affine_from_ras(shift), mni_grid((20, 24, 20)), order=0)
    values = np.asarray(out.dataobj)
    assert values.dtype == np.int16 and set(np.unique(values)) <= {0, 3, 7}
    with pytest.raises(ConfigError, match="order"):
        apply_transform(img, _itk_affine_from_ras(shift), img, order=2)


def test_n4_removes_a_smooth_bias(template3):
    data = np.asarray(template3.dataobj)
    x = np.linspace(-1, 1, data.shape[0])[:, None, None]
    z = np.linspace(-1, 1, data.shape[2])[None, None, :]
    field = np.exp(0.3 * x + 0.2 * z) * np.ones_like(data)
    biased = nib.Nifti1Image((data * field).astype(np.float32), template3.affine)
    corrected = sitk.GetArrayFromImage(n4_bias_correct(nifti_to_sitk(biased)))
    ratio = corrected.transpose(2, 1, 0) / np.maximum(data, 1e-6)
    brain = data > 0.3
    cv_before = field[brain].std() / field[brain].mean()  # 0.12
    cv_after = ratio[brain].std() / ratio[brain].mean()  # 0.03 measured
    assert cv_after < 0.4 * cv_before


def test_rough_brain_mask_keeps_brain_and_drops_scalp(template3):
    data = np.asarray(template3.dataobj).copy()
    brain = data > 0.1
    dist = ndimage.distance_transform_edt(~brain, sampling=3.0)
    skull, scalp = (dist > 0) & (dist <= 12), (dist > 12) & (dist <= 18)
    data[skull], data[scalp] = 0.03, 0.8  # dark skull/CSF, bright scalp fat
    head = nifti_to_sitk(nib.Nifti1Image(data, template3.affine))
    mask = sitk.GetArrayFromImage(rough_brain_mask(head)).transpose(2, 1, 0) > 0
    assert scalp.sum() > 5000
    assert mask[brain].mean() > 0.99
    assert mask[scalp].mean() < 0.05


def test_registration_recovers_a_known_affine(template3, brain_points):
    """Rotation ~10 deg, translation ~13 mm, scaling 3-5 %: mean error < 1.5 mm.

    1.5 mm is half a 3 mm voxel of the moved image (the fixed template has 4 mm voxels);
    0.2-0.3 mm is measured. With one thread a repeated run must be bit-identical.
    """
    true = _known_affine()
    moved = nib.Nifti1Image(np.asarray(template3.dataobj), true @ template3.affine)
    result = register_img(moved, grid=GRID, config=FAST)
    assert _mean_error(result, true, brain_points) < 1.5
    assert result.template_correlation > 0.9
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        once = register_img(moved, grid=GRID, config=FAST)
        again = register_img(moved, grid=GRID, config=FAST)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    np.testing.assert_array_equal(
        transform_matrix(again.transform), transform_matrix(once.transform)
    )
    np.testing.assert_allclose(
        transform_matrix(again.transform), transform_matrix(result.transform), atol=1e-3
    )
    out = np.asarray(result.img.dataobj)
    assert result.img.shape == GRID.shape and out.dtype == np.float32
    assert 0.98 < np.percentile(out[out > 0], 99) / 1.0 < 1.02  # rescaled to its p99


@pytest.mark.parametrize("how", ["flip_x", "lps", "permuted"])
def test_odd_orientations_land_in_place(template3, brain_points, how):
    result = register_img(_reoriented(template3, how), grid=GRID, config=FAST)
    assert _mean_error(result, np.eye(4), brain_points) < 1.5
    assert result.template_correlation > 0.9


def test_constant_and_empty_images_give_clear_errors(template3, tmp_path):
    with pytest.raises(ImageError, match="constant"):
        register_img(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), config=FAST)
    path = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), path)
    with pytest.raises(ImageError, match=r"empty\.nii\.gz.*constant"):
        register_img(path, config=FAST)


def test_pure_noise_gives_a_clear_error(template3):
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, template3.shape).astype(np.float32)
    with pytest.raises(ImageError, match="no brain found"):
        register_img(nib.Nifti1Image(noise, template3.affine), grid=GRID, config=FAST)
    # Smooth noise has large blobs: registration "converges", the correlation check refuses it.
    smooth = ndimage.gaussian_filter(noise, 3)
    with pytest.raises(ImageError, match=r"registration failed.*correlates r=-?0\.\d\d"):
        register_img(nib.Nifti1Image(smooth, template3.affine), grid=GRID, config=FAST)


def test_registration_config_validates_and_serialises():
    raw = RegistrationConfig().to_dict()
    assert json.loads(json.dumps(raw)) == raw
    assert RegistrationConfig(**{**raw, "similarity_levels": [[4, 4]]}).similarity_levels == (
        (4, 4.0),
    )
    for bad in (
        {"sampling_percentage": 0},
        {"iterations": 0},
        {"random_state": -1},
        {"affine_levels": ((0, 1.0),)},
        {"similarity_levels": ()},
        {"n4_iterations": ()},
        {"n4_resolution": "x"},
        {"min_template_correlation": 2},
    ):
        with pytest.raises(ConfigError, match="registration"):
            RegistrationConfig(**bad)
