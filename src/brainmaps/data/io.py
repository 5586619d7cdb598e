"""Load, validate and save NIfTI images.

:func:`load_img` is the single entry point through which brainmaps reads a scan: it
checks the file, reads the voxels into memory as ``float32`` and refuses images that
cannot be used (corrupt files, several volumes, non-finite or constant voxels), each
time with a message that names the file and says how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from brainmaps.exceptions import ImageError
from brainmaps.utils import atomic_path
from brainmaps.validation import NIFTI_SUFFIXES, check_img, check_volume

__all__ = ["NIFTI_SUFFIXES", "check_volume", "load_img", "save_array", "save_img", "write_nifti"]


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def load_img(path: str | os.PathLike, *, labels: bool = False) -> nib.Nifti1Image:
    """Load and validate a 3D NIfTI image (through :func:`brainmaps.validation.check_img`).

    The voxels are read into memory as ``float32`` (scaling slope and intercept
    applied); the original affine and header are kept. A 4D (or higher) image with a
    single volume is squeezed to 3D. A header claiming a shape that the file or the
    available memory cannot hold is refused before any voxel is read.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.nii`` or ``.nii.gz`` file.
    labels : bool
        A label image (atlas): keep the integer dtype and refuse non-integer values
        instead of converting to ``float32``.

    Returns
    -------
    nibabel.Nifti1Image
        An in-memory image (``Nifti2Image`` if the file is NIfTI-2) with ``float32`` data
        (integer data with ``labels``).

    Raises
    ------
    ImageError
        If the file is missing, a directory, unreadable, not a NIfTI file, corrupt,
        truncated or too large for memory; holds several volumes or fewer than three
        dimensions; holds NaN or infinite voxels; or is constant. The message names the
        file.
    """
    return check_img(Path(path).expanduser(), labels=labels)


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
        write_nifti(img, tmp, path)
    return path


def write_nifti(img: nib.Nifti1Image, tmp: Path, path: Path) -> None:
    """``nib.save(img, tmp)``; an OSError without a file name (gzip's) gets ``path``.

    A full disk then reads "no space left on device while writing <path>" on the command
    line (see :mod:`brainmaps.cli.main`).
    """
    try:
        nib.save(img, tmp)
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


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
