"""Shared checks of parameters, paths and images, with scikit-learn-style messages.

Every check names the parameter as the user gave it (``flag="--epochs"`` on the command
line, the keyword otherwise), says what was expected and what was found, and how to fix
it. The bottom layer of brainmaps: it imports only :mod:`brainmaps.exceptions`, the
standard library, NumPy and nibabel.

:func:`check_img` is the one gate through which images enter brainmaps (scans, maps,
masks and label atlases); it refuses a header whose shape the file cannot hold before
any voxel is read.
"""

from __future__ import annotations

import math
import numbers
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from brainmaps.exceptions import ConfigError, ImageError

__all__ = [
    "NIFTI_SUFFIXES",
    "check_choice",
    "check_float",
    "check_fraction",
    "check_img",
    "check_int",
    "check_output_dir",
    "check_output_file",
    "check_volume",
    "parse_list",
]

#: File name endings accepted as NIfTI images.
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Deflate cannot compress by more than about 1032:1, so a .nii.gz file cannot hold more.
_MAX_GZIP_RATIO = 1100
# Errors that nibabel, gzip and numpy raise on corrupt, truncated or foreign files.
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def _label(name: str, flag: str | None) -> str:
    return flag or name


def _interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_int(
    name: str, value: Any, *, min: int | None = None, max: int | None = None, flag=None
) -> int:
    """Check that ``value`` is an integer in ``[min, max]``; return it as ``int``.

    Parameters
    ----------
    name : str
        The parameter's keyword, used in the message unless ``flag`` is given.
    value : object
        An ``int`` or NumPy integer (a float with an integral value is accepted).
    min, max : int, optional
        Inclusive bounds.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--epochs"``.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If ``value`` is not an integer (booleans are not) or lies outside the bounds.
    """
    label = _label(name, flag)
    expected = f"an integer{_interval(min, max)}"
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    if isinstance(value, bool) or not integral:
        raise ConfigError(f"{label}: expected {expected}, got {value!r}. Pass {expected}.")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ConfigError(
            f"{label}: expected {expected}, got {value}. Choose a value inside that range."
        )
    return value


def check_float(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    flag: str | None = None,
) -> float:
    """Check that ``value`` is a finite real number within bounds; return it as ``float``.

    Parameters
    ----------
    name : str
        The parameter's keyword, used in the message unless ``flag`` is given.
    value : object
        An int, float or NumPy number.
    min, max : float, optional
        Bounds, inclusive unless ``min_open`` / ``max_open``.
    min_open, max_open : bool
        Exclude the bound itself.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--lr"``.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        If ``value`` is not a finite number or lies outside the bounds.
    """
    label = _label(name, flag)
    expected = f"a number{_interval(min, max, min_open, max_open)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{label}: expected {expected}, got {value!r}. Pass {expected}.")
    value = float(value)
    below = min is not None and (value <= min if min_open else value < min)
    above = max is not None and (value >= max if max_open else value > max)
    if not math.isfinite(value) or below or above:
        raise ConfigError(
            f"{label}: expected {expected}, got {value!r}. Choose a value inside that range."
        )
    return value


def check_fraction(
    name: str, value: Any, *, closed: bool = False, flag: str | None = None
) -> float:
    """Check that ``value`` is a fraction: in ``(0, 1)``, or ``[0, 1]`` when ``closed``.

    Parameters
    ----------
    name : str
        The parameter's keyword.
    value : object
        A number.
    closed : bool
        Accept 0 and 1 themselves.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--val-fraction"``.

    Returns
    -------
    float
    """
    return check_float(
        name, value, min=0, max=1, min_open=not closed, max_open=not closed, flag=flag
    )


def check_choice(name: str, value: Any, choices: Iterable[str], flag: str | None = None) -> str:
    """Check that ``value`` is one of ``choices``; return it.

    Parameters
    ----------
    name : str
        The parameter's keyword.
    value : object
        The value given.
    choices : iterable of str
        The accepted values.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--task"``.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        Naming the accepted values (and the closest one when it differs only in case).
    """
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    close = [c for c in choices if isinstance(value, str) and c.lower() == value.strip().lower()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{_label(name, flag)}: expected one of {', '.join(map(str, choices))}, got "
        f"{value!r}.{hint}"
    )


def parse_list(
    text: str | Iterable[str] | None,
    param: str,
    *,
    choices: Iterable[str] | None = None,
    example: str = "a,b",
) -> list[str] | None:
    """Split a comma-separated list such as ``--methods grad_cam,gradient``.

    Parameters
    ----------
    text : str, iterable of str or None
        The value given; ``None`` (not given) stays ``None``, a list is taken as is.
    param : str
        The parameter as the user gave it, e.g. ``"--methods"``.
    choices : iterable of str, optional
        Accepted names; any other raises.
    example : str
        An example value for the message.

    Returns
    -------
    list of str or None
        Stripped, non-empty names in order, each once.

    Raises
    ------
    ConfigError
        If no name is left, or a name is not among ``choices``.
    """
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if choices is not None:
        choices = tuple(choices)
        example = ",".join(choices[:2]) or example
    if not names:
        raise ConfigError(
            f"{param}: expected comma-separated names (e.g. {example}), got {text!r}."
        )
    if choices is not None:
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise ConfigError(
                f"{param}: unknown name(s) {', '.join(unknown)}; choose from {', '.join(choices)}."
            )
    return names


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``lexists``: links count)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _check_ancestors(path: Path, param: str) -> Path:
    """Refuse a path under a regular file or an unwritable folder; return its parent."""
    parent = path.parent
    existing = _first_existing(parent)
    if not existing.is_dir():
        raise ConfigError(
            f"{param}: {path} cannot be created because {existing} is a file, not a folder; "
            "choose a path whose folders are folders, or move that file away."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{param}: {path} cannot be written: permission denied in {existing}; choose a "
            "folder you can write to."
        )
    return existing


def check_output_file(path: str | os.PathLike, param: str) -> Path:
    """Check that a file can be written at ``path`` (nothing is created).

    Parameters
    ----------
    path : str or os.PathLike
        Where a file will be written; its missing folders may be created later.
    param : str
        The parameter as the user gave it, e.g. ``"--out"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        If ``path`` is a folder, lies under a regular file, or its folder is not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{param}: {path} is a folder, expected a file name; name a file inside it "
            f"(e.g. {path / 'output.tsv'}) or another path."
        )
    _check_ancestors(path, param)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(
            f"{param}: {path} exists and is not writable (permission denied); choose "
            "another file or fix its permissions."
        )
    return path


def check_output_dir(path: str | os.PathLike, param: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder (nothing is created).

    Parameters
    ----------
    path : str or os.PathLike
        A folder to create or to write into.
    param : str
        The parameter as the user gave it, e.g. ``"--cache-dir"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        If ``path`` is a regular file, lies under one, or is not writable.
    """
    path = Path(path).expanduser()
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(
            f"{param}: {path} is a file, expected a folder; choose another path (or move the "
            "file away)."
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{param}: folder {path} is not writable (permission denied); choose a "
                "folder you can write to."
            )
        return path
    _check_ancestors(path, param)
    return path


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
