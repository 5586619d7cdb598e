"""Geometry between NIfTI and SimpleITK, registration transforms, and moving maps with them.

NIfTI affines map voxels to RAS millimetres, ITK images and transforms work in LPS
millimetres: the first two world axes change sign. :func:`nifti_to_sitk` and
:func:`sitk_to_nifti` convert images without losing geometry (the same result as
``sitk.ReadImage`` of the saved file), :func:`transform_matrix` turns an ITK transform into
a RAS 4x4 matrix, and :func:`apply_transform` moves an image between native and MNI space
with a transform written by :func:`~brainmaps.data.pipeline.preprocess_cohort`.

Registration transforms follow ITK: the affine in ``*_from-T1w_to-MNI_affine.tfm`` maps
MNI points to native points, which is what resampling a native image onto the MNI grid
needs.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from brainmaps.data.preprocess import Grid
from brainmaps.exceptions import ConfigError, ImageError
from brainmaps.utils import atomic_path

__all__ = [
    "apply_transform",
    "as_nifti",
    "nifti_to_sitk",
    "read_transform",
    "sitk_to_nifti",
    "transform_matrix",
    "write_transform",
]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}


def _geometry(affine: np.ndarray, name: str) -> tuple[list, list, list]:
    """Return ITK spacing, origin and direction (LPS) of a NIfTI affine (RAS)."""
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:
        raise ImageError(
            f"{name} has a sheared affine {np.round(affine, 4).tolist()}, which ITK cannot "
            "represent; resample it to an orthogonal grid first (e.g. "
            "nilearn.image.resample_img with a diagonal target_affine)."
        )
    return spacing.tolist(), lps[:3, 3].tolist(), direction.ravel().tolist()


def nifti_to_sitk(img: nib.Nifti1Image, dtype=np.float32, name: str = "image") -> sitk.Image:
    """Convert a 3D NIfTI image to a SimpleITK image with the same world geometry.

    NIfTI affines map voxels to RAS millimetres, ITK geometry to LPS: the first two
    world axes change sign. The result equals ``sitk.ReadImage`` of the saved file.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D image (trailing singleton dimensions are dropped) with an orthogonal
        (possibly rotated or flipped) affine.
    dtype : numpy dtype or None
        Voxel type; ``None`` keeps the image's own.
    name : str
        How to name the image in error messages.

    Returns
    -------
    SimpleITK.Image
    """
    data = np.asarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise ImageError(f"{name} has shape {data.shape}, expected a 3D volume.")
    spacing, origin, direction = _geometry(img.affine, name)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _itk_affine(image: sitk.Image) -> np.ndarray:
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    lps[:3, 3] = image.GetOrigin()
    return _RAS_TO_LPS @ lps


def sitk_to_nifti(image: sitk.Image) -> nib.Nifti1Image:
    """Convert a 3D SimpleITK image to NIfTI (the inverse of :func:`nifti_to_sitk`)."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return nib.Nifti1Image(np.ascontiguousarray(data), _itk_affine(image))


def reference_image(shape, affine) -> sitk.Image:
    """An empty image that carries only a grid's geometry (for resampling onto it)."""
    image = sitk.Image([int(n) for n in shape], sitk.sitkUInt8)
    spacing, origin, direction = _geometry(affine, "reference")
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """Return an affine transform as a 4x4 matrix in RAS millimetres (NIfTI convention).

    Parameters
    ----------
    transform : SimpleITK.Transform
        An affine-like transform (affine, similarity, Euler, translation) or one read
        from a file.

    Returns
    -------
    numpy.ndarray
        ``M`` with ``M @ [x, y, z, 1]`` the point (RAS mm) that the transform maps
        ``(x, y, z)`` (RAS mm) to; for a registration transform, MNI -> native.
    """
    origin = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)), dtype=float)
    lps = np.eye(4)
    for axis in range(3):
        unit = np.eye(3)[axis]
        lps[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit)), dtype=float) - origin
    lps[:3, 3] = origin
    return _RAS_TO_LPS @ lps @ _RAS_TO_LPS


def write_transform(transform: sitk.Transform, path: str | os.PathLike) -> None:
    """Write a transform as an ITK text file (``.tfm``), atomically."""
    with atomic_path(path, suffix=Path(path).suffix or ".tfm") as tmp:
        sitk.WriteTransform(transform, str(tmp))


def read_transform(path: str | os.PathLike) -> sitk.Transform:
    """Read an ITK transform file (``.tfm``, ``.txt``, ``.mat``, ``.h5``).

    Raises
    ------
    ImageError
        If the file is missing or not a transform.
    """
    if not os.path.isfile(path):
        raise ImageError(
            f"transform file {path} does not exist; it is written by 'brainmaps preprocess' "
            "as sub-<id>/xfm/sub-<id>_from-T1w_to-MNI_affine.tfm."
        )
    try:
        return sitk.ReadTransform(os.fspath(path)).Downcast()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"transform file {path} could not be read ({reason}).") from None


def as_nifti(img_or_path, what: str = "image") -> nib.Nifti1Image:
    """Return a NIfTI image, loading it (lazily, any values) if given a path.

    Unlike :func:`~brainmaps.data.io.load_img` nothing is validated beyond readability,
    so all-zero maps and label images pass.
    """
    if isinstance(img_or_path, str | os.PathLike):
        path = os.fspath(img_or_path)
        if not os.path.isfile(path):
            raise ImageError(f"{what} {path} does not exist; check the path.")
        try:
            return nib.load(path)
        except Exception as exc:  # nibabel raises many types on foreign files
            raise ImageError(f"{what} {path} could not be read as NIfTI ({exc}).") from None
    if not isinstance(img_or_path, nib.spatialimages.SpatialImage):
        raise ImageError(
            f"{what} must be a NIfTI image or a path, got {type(img_or_path).__name__}."
        )
    return img_or_path


def apply_transform(
    img_or_path,
    transform_path,
    reference,
    inverse: bool = False,
    *,
    order: int = 1,
) -> nib.Nifti1Image:
    """Resample an image through a registration transform onto another grid.

    With ``inverse=False`` a native-space image (e.g. the scan, a label map) is taken to
    MNI space; with ``inverse=True`` an MNI-space image (e.g. an attribution map, an atlas)
    is taken back to the native space of the scan the transform was estimated on.

    Parameters
    ----------
    img_or_path : nibabel.Nifti1Image or path-like
        The 3D image to move.
    transform_path : path-like or SimpleITK.Transform
        A ``*_from-T1w_to-MNI_affine.tfm`` written by
        :func:`~brainmaps.data.pipeline.preprocess_cohort` (MNI -> native points; see
        :func:`~brainmaps.data.pipeline.output_paths`), or the transform itself.
    reference : nibabel.Nifti1Image, path-like or Grid
        The output grid: shape and affine (e.g. the native scan for ``inverse=True``, or
        ``mni_grid((91, 109, 91))``).
    inverse : bool
        Take the image from MNI space to native space.
    order : {0, 1, 3}
        Interpolation: 0 nearest neighbour (label maps; keeps the dtype), 1 trilinear,
        3 cubic B-spline. Voxels outside the input are 0.

    Returns
    -------
    nibabel.Nifti1Image
        On ``reference``'s grid; ``float32`` unless ``order=0``.
    """
    if order not in _INTERPOLATORS:
        raise ConfigError(f"order must be 0, 1 or 3, got {order!r}.")
    img = as_nifti(img_or_path, "image")
    transform = transform_path
    if isinstance(transform, str | os.PathLike):
        transform = read_transform(transform)
    if isinstance(reference, Grid):
        shape, affine = reference.shape, reference.affine
    else:
        ref = as_nifti(reference, "reference image")
        shape, affine = ref.shape[:3], ref.affine
    if inverse:
        try:
            transform = transform.GetInverse()
        except RuntimeError:
            raise ImageError("the transform is not invertible; pass inverse=False.") from None
    moving = nifti_to_sitk(img, dtype=None if order == 0 else np.float32, name="image")
    pixel = moving.GetPixelID() if order == 0 else sitk.sitkFloat32
    out = sitk.Resample(
        moving, reference_image(shape, affine), transform, _INTERPOLATORS[order], 0.0, pixel
    )
    return nib.Nifti1Image(sitk.GetArrayFromImage(out).transpose(2, 1, 0), affine)
