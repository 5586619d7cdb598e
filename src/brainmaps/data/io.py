"""Load, validate and save NIfTI images.

:func:`load_img` is the single entry point through which brainmaps reads a scan: it
checks the file, reads the voxels into memory as ``float32`` and refuses images that
cannot be used (corrupt files, several volumes, non-finite or constant voxels), each
time with a message that names the file and says how to fix it.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from brainmaps.exceptions import ImageError
from brainmaps.utils import atomic_path

__all__ = ["NIFTI_SUFFIXES", "check_volume", "load_img", "save_array", "save_img"]

#: File name endings accepted as NIfTI images.
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# Errors that nibabel, gzip and numpy raise on corrupt, truncated or foreign files.
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _check_file(path: Path) -> None:
    """Raise :class:`ImageError` unless ``path`` is a readable NIfTI file."""
    if not path.exists():
        raise ImageError(
            f"image file {path} does not exist; check the path (relative paths are resolved "
            f"from {Path.cwd()}) or the path column of the cohort table."
        )
    if path.is_dir():
        raise ImageError(
            f"image path {path} is a directory, expected a .nii or .nii.gz file; "
            "point to the image file inside it."
        )
    if not _is_nifti_name(path):
        raise ImageError(
            f"image file {path} has suffix {''.join(path.suffixes) or '(none)'!r}, expected "
            "'.nii' or '.nii.gz'; convert it to NIfTI (e.g. with dcm2niix or nibabel)."
        )
    if not os.access(path, os.R_OK):
        raise ImageError(
            f"image file {path} is not readable (permission denied); fix its permissions "
            "(e.g. chmod u+r) or copy it somewhere readable."
        )


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton dimensions beyond the third; refuse anything else."""
    if data.ndim < 3:
        raise ImageError(
            f"image {path} has {data.ndim} dimension(s) (shape {data.shape}), expected a 3D "
            "volume; brainmaps needs whole 3D scans, not slices."
        )
    extra = data.shape[3:]
    if any(n != 1 for n in extra):
        n_volumes = int(np.prod(extra))
        raise ImageError(
            f"image {path} is {data.ndim}D with shape {data.shape} ({n_volumes} volumes), "
            "expected a single 3D volume; extract one volume first (e.g. "
            "nilearn.image.index_img(img, 0) or fslroi) or average them (nilearn.image.mean_img)."
        )
    return data.reshape(data.shape[:3])


def check_volume(data: np.ndarray, name: str = "volume") -> np.ndarray:
    """Check that an array is a usable 3D volume.

    Parameters
    ----------
    data : numpy.ndarray
        The voxel values, shape ``(X, Y, Z)``.
    name : str
        How to name the volume in error messages (a file name or a parameter name).

    Returns
    -------
    numpy.ndarray
        ``data`` itself, so that the call can be chained.

    Raises
    ------
    ImageError
        If the array is not 3D, is empty, holds NaN or infinite values, or is constant
        (e.g. all zero).
    """
    data = np.asarray(data)
    if data.ndim != 3 or data.size == 0:
        raise ImageError(
            f"{name} has shape {data.shape}, expected a non-empty 3D volume (X, Y, Z)."
        )
    if not np.issubdtype(data.dtype, np.number) and data.dtype != np.bool_:
        raise ImageError(f"{name} has dtype {data.dtype}, expected numeric voxel values.")
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        raise ImageError(
            f"{name} holds {n_nan} NaN and {n_inf} infinite voxel(s) out of {data.size}, "
            "expected finite values; replace them (e.g. numpy.nan_to_num) and save the image "
            "again."
        )
    low, high = data.min(), data.max()
    if low == high:
        raise ImageError(
            f"{name} is constant (every voxel equals {low}), expected an image with contrast; "
            "check that the right file was given and that it was written correctly."
        )
    return data


def load_img(path: str | os.PathLike) -> nib.Nifti1Image:
    """Load and validate a 3D NIfTI image.

    The voxels are read into memory as ``float32`` (scaling slope and intercept
    applied); the original affine and header are kept. A 4D (or higher) image with a
    single volume is squeezed to 3D.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    nibabel.Nifti1Image
        An in-memory image (``Nifti2Image`` if the file is NIfTI-2) with ``float32`` data.

    Raises
    ------
    ImageError
        If the file is missing, a directory, unreadable, not a NIfTI file, corrupt or
        truncated; holds several volumes or fewer than three dimensions; holds NaN or
        infinite voxels; or is constant. The message names the file.
    """
    path = Path(path).expanduser()
    _check_file(path)
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise ImageFileError(f"{type(img).__name__} is not a NIfTI image")
        data = np.asarray(img.dataobj, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=float)
    except _READ_ERRORS as exc:
        reason = " ".join(str(exc).split())
        raise ImageError(
            f"image file {path} could not be read as NIfTI ({type(exc).__name__}: {reason}); the "
            "file is corrupt, truncated or not a NIfTI image: copy or convert it again."
        ) from None
    data = _squeeze_to_3d(data, path)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageError(
            f"image {path} has an invalid affine (singular or non-finite): {affine.tolist()}; "
            "fix the header (sform/qform) of the file, e.g. with nibabel or fslorient."
        )
    check_volume(data, name=f"image {path}")
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    out = type(img)(data, affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    return out


def _check_out_path(path: Path) -> None:
    if not _is_nifti_name(path):
        raise ImageError(
            f"output path {path} must end with '.nii' or '.nii.gz' so that it is written as "
            "NIfTI; change the file name."
        )


def save_img(img: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """Write a NIfTI image atomically.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        The image to write.
    path : str or os.PathLike
        Destination ending in ``.nii`` or ``.nii.gz`` (compressed); the parent folder is
        created if needed. Readers never see a half-written file.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    _check_out_path(path)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, tmp)
    return path


def save_array(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an array with an affine as a NIfTI image, atomically.

    Parameters
    ----------
    data : numpy.ndarray
        Voxel values, 3D (or 4D for several channels). Booleans are stored as ``uint8``
        and ``float64`` as ``float32``.
    affine : numpy.ndarray
        The 4x4 voxel-to-world matrix.
    path : str or os.PathLike
        Destination ending in ``.nii`` or ``.nii.gz``.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    data = np.asarray(data)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    elif data.dtype == np.int64:
        data = data.astype(np.int32)
    return save_img(nib.Nifti1Image(data, np.asarray(affine, dtype=float)), path)
