"""The one gate of images: :func:`check_img` (scans, maps, masks and label atlases).

A header whose shape x dtype the file (or the available memory) cannot hold is refused
before any voxel is read, with a message naming the file.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from brainmaps.exceptions import ImageError

__all__ = ["NIFTI_SUFFIXES", "check_img", "check_volume"]

#: File name endings accepted as NIfTI images.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Deflate cannot compress by more than about 1032:1, so a .nii.gz file cannot hold more.
_MAX_GZIP_RATIO = 1100
# Errors that nibabel, gzip and numpy raise on corrupt, truncated or foreign files.
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def check_volume(data: np.ndarray, name: str = "volume", *, contrast: bool = True) -> np.ndarray:
    """Check that an array is a usable 3D volume.

    Parameters
    ----------
    data : numpy.ndarray
        The voxel values, shape ``(X, Y, Z)``.
    name : str
        How to name the volume in error messages (a file name or a parameter name).
    contrast : bool
        Also refuse a constant volume (e.g. all zero).

    Returns
    -------
    numpy.ndarray
        ``data`` itself, so that the call can be chained.

    Raises
    ------
    ImageError
        If the array is not 3D, is empty, holds NaN or infinite values, or is constant.
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
    if contrast and low == high:
        raise ImageError(
            f"{name} is constant (every voxel equals {low}), expected an image with contrast; "
            "check that the right file was given and that it was written correctly."
        )
    return data


def _check_file(path: Path, name: str) -> None:
    """Raise :class:`ImageError` unless ``path`` is a readable NIfTI file."""
    what = f"{name}: image file" if name != "img" else "image file"
    if not path.exists():
        raise ImageError(
            f"{what} {path} does not exist; check the path (relative paths are resolved "
            f"from {Path.cwd()}) or the path column of the cohort table."
        )
    if path.is_dir():
        raise ImageError(
            f"{what} {path} is a directory, expected a .nii or .nii.gz file; point to the "
            "image file inside it."
        )
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise ImageError(
            f"{what} {path} has suffix {''.join(path.suffixes) or '(none)'!r}, expected "
            "'.nii' or '.nii.gz'; convert it to NIfTI (e.g. with dcm2niix or nibabel)."
        )
    if not os.access(path, os.R_OK):
        raise ImageError(
            f"{what} {path} is not readable (permission denied); fix its permissions "
            "(e.g. chmod u+r) or copy it somewhere readable."
        )


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    """A byte count for people: ``"4.35 kB"``, ``"98.2 TB"``."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def _check_claimed_size(img, path: Path) -> None:
    """Refuse a header whose shape x dtype the file (or the memory) cannot hold."""
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    n_bytes = math.prod(shape) * itemsize
    offset = int(header.get_data_offset()) if hasattr(header, "get_data_offset") else 0
    on_disk = path.stat().st_size
    claim = f"its header claims shape {shape} of {header.get_data_dtype()} ({_gib(n_bytes)})"
    if path.name.lower().endswith(".gz"):
        if offset + n_bytes > _MAX_GZIP_RATIO * max(on_disk, 1):
            raise ImageError(
                f"image file {path} could not be read: the file is corrupt ({claim}, more "
                f"than a {_gib(on_disk)} gzip file can hold); its header is damaged. Copy or "
                "convert the image again."
            )
    elif offset + n_bytes > on_disk:
        raise ImageError(
            f"image file {path} could not be read: the file is truncated or corrupt ({claim} "
            f"but the file holds {_gib(on_disk)}); copy or convert the image again."
        )
    available = _available_memory()
    needed = math.prod(shape) * max(itemsize, 4)
    if available is not None and needed > available:
        raise ImageError(
            f"image file {path} is too large to load: {claim}, about {_gib(needed)} in "
            f"memory, but only {_gib(available)} is available; check that it is one brain "
            "scan (not a corrupt header), or crop or downsample it first."
        )


def _read(img: str | os.PathLike | Any, name: str):
    """Return ``(image, source)``; a path is opened (header only) and size-checked."""
    if isinstance(img, str | os.PathLike):
        path = Path(img).expanduser()
        _check_file(path, name)
        try:
            img = nib.load(path)
            if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
                raise ImageFileError(f"{type(img).__name__} is not a NIfTI image")
        except _READ_ERRORS as exc:
            raise _unreadable(path, exc) from None
        _check_claimed_size(img, path)
        return img, f"image {path}" if name == "img" else f"{name}: image {path}"
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageError(f"{name}: expected a NIfTI image or path, got {type(img).__name__}.")
    filename = img.get_filename()
    if filename and not isinstance(img.dataobj, np.ndarray) and os.path.isfile(filename):
        _check_claimed_size(img, Path(filename))
    return img, f"{name} ({filename})" if filename else name


def _unreadable(path: Path, exc: BaseException) -> ImageError:
    reason = " ".join(str(exc).split())
    return ImageError(
        f"image file {path} could not be read as NIfTI ({type(exc).__name__}: {reason}); the "
        "file is corrupt, truncated or not a NIfTI image: copy or convert it again."
    )


def _squeeze_to_3d(data: np.ndarray, source: str, labels: bool) -> np.ndarray:
    """Drop trailing singleton dimensions beyond the third; refuse anything else."""
    if data.ndim < 3:
        raise ImageError(
            f"{source} has {data.ndim} dimension(s) (shape {data.shape}), expected a 3D "
            "volume; brainmaps needs whole 3D scans, not slices."
        )
    extra = data.shape[3:]
    if any(n != 1 for n in extra):
        if labels:
            fix = (
                "a label atlas is one 3D volume of integer labels (turn a 4D probabilistic "
                "atlas into max-probability labels first)"
            )
        else:
            fix = (
                "extract one volume first (e.g. nilearn.image.index_img(img, 0) or fslroi) "
                "or average them (nilearn.image.mean_img)"
            )
        raise ImageError(
            f"{source} is {data.ndim}D with shape {data.shape} ({math.prod(extra)} volumes), "
            f"expected a single 3D volume; {fix}."
        )
    return data.reshape(data.shape[:3])


def _check_affine(affine: np.ndarray, source: str) -> None:
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageError(
            f"{source} has an invalid affine (singular or non-finite): {affine.tolist()}; "
            "fix the header (sform/qform) of the file, e.g. with nibabel or fslorient."
        )


def _as_labels(data: np.ndarray, source: str) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        return data.astype(np.int32) if data.dtype.itemsize > 4 or data.dtype == np.bool_ else data
    values = data.astype(np.float64, copy=False)
    bad = values[~np.isfinite(values) | (values != np.round(values))]
    if bad.size:
        raise ImageError(
            f"{source} holds non-integer values (e.g. {bad[:3].tolist()}); a label atlas must "
            "be an integer label image (it is not a probability or intensity map)."
        )
    return values.astype(np.int32)


def check_img(
    img: str | os.PathLike | nib.Nifti1Image,
    name: str = "img",
    *,
    labels: bool = False,
    contrast: bool = True,
) -> nib.Nifti1Image:
    """Load (if a path) and validate a 3D NIfTI image: the gate of every image.

    The file is checked (exists, is a file, ``.nii``/``.nii.gz``, readable) and its
    header's shape x dtype compared with what the file and the available memory can
    hold before any voxel is read. A 4D (or higher) image with a single volume is
    squeezed to 3D.

    Parameters
    ----------
    img : str, os.PathLike or nibabel.Nifti1Image
        A ``.nii`` / ``.nii.gz`` file or a NIfTI image.
    name : str
        The parameter's name for messages (``"img"``: only the file is named).
    labels : bool
        A label image: keep its integer dtype (float-stored labels become ``int32``) and
        refuse non-integer values. Otherwise the data become ``float32`` (scaling slope
        and intercept applied) and must be finite.
    contrast : bool
        Refuse a constant image (not for label images).

    Returns
    -------
    nibabel.Nifti1Image
        An in-memory image (``Nifti2Image`` if the input is NIfTI-2) with the original
        affine and header (dtype updated, scaling reset).

    Raises
    ------
    ImageError
        If the file is missing, a directory, unreadable, not NIfTI, corrupt, truncated or
        too large for memory; holds several volumes or fewer than three dimensions; has
        an invalid affine; holds NaN or infinite voxels; is constant (with
        ``contrast``); or holds non-integer values (with ``labels``). The message names
        the file.
    """
    img, source = _read(img, name)
    path = img.get_filename()
    try:
        raw = np.asanyarray(img.dataobj) if labels else np.asarray(img.dataobj, np.float32)
        affine = np.asarray(img.affine, dtype=float)
    except _READ_ERRORS as exc:
        raise _unreadable(Path(path or name), exc) from None
    data = _squeeze_to_3d(np.asarray(raw), source, labels)
    _check_affine(affine, source)
    if labels:
        data = _as_labels(data, source)
        check_volume(data, name=source, contrast=False)
    else:
        check_volume(data, name=source, contrast=contrast)
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    out = type(img)(data, affine, header)
    out.header.set_slope_inter(1.0, 0.0)
    return out
