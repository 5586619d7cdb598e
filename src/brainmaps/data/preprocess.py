"""Bring scans to the model grid: reorient, resample in world space, mask, normalise.

The model grid is a box of voxels tiling the FSL MNI152 bounding box
(:data:`MNI_BOX_ORIGIN`, :data:`MNI_BOX_SIZE`); its default shape is the 58 x 70 x 58 of
Kan et al. (after Xin et al.). Images are always resampled *through their affines*
(world coordinates in mm), never by array shape, so scans of any orientation and voxel
size land on the same anatomy. Images are expected to be in MNI space already (or close
to it); brainmaps does not register them.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainmaps.data.io import check_volume, load_img
from brainmaps.exceptions import ConfigError, ImageError, ShapeError

__all__ = [
    "DEFAULT_GRID_SHAPE",
    "MNI_BOX_ORIGIN",
    "MNI_BOX_SIZE",
    "NORMALIZATIONS",
    "Grid",
    "PreprocessConfig",
    "mni_brain_mask",
    "mni_grid",
    "normalize",
    "parse_grid",
    "preprocess_img",
    "reorient_canonical",
    "resample_to_grid",
]

#: Corner (mm, RAS) of the FSL MNI152 bounding box: the outer edge of its first voxel.
MNI_BOX_ORIGIN = (-90.0, -126.0, -72.0)
#: Extent (mm) of the FSL MNI152 bounding box (182 x 218 x 182 voxels of 1 mm).
MNI_BOX_SIZE = (182.0, 218.0, 182.0)
#: Grid shape of Kan et al. / Xin et al.
DEFAULT_GRID_SHAPE = (58, 70, 58)
#: Accepted values of ``normalization``.
NORMALIZATIONS = ("zscore", "minmax", "none")


def _as_shape(shape: Any, name: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in shape)
        exact = all(float(v) == int(v) for v in shape)
    except (TypeError, ValueError):
        values, exact = (), False
    if len(values) != 3 or not exact or min(values) <= 0:
        raise ConfigError(
            f"{name} must be three positive integers (e.g. (58, 70, 58)), got {shape!r}."
        )
    return values


@dataclass(frozen=True)
class Grid:
    """A 3D voxel grid in world space: a shape and a voxel-to-world affine.

    Parameters
    ----------
    shape : tuple of int
        Number of voxels along each axis.
    affine_rows : array-like, shape (4, 4)
        The voxel-to-world (mm) matrix; stored as a tuple of tuples so that the grid is
        hashable. Use the :attr:`affine` property for a NumPy array.
    """

    shape: tuple[int, int, int]
    affine_rows: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _as_shape(self.shape, "Grid.shape"))
        affine = np.asarray(self.affine_rows, dtype=float)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise ConfigError(f"Grid affine must be a finite 4x4 matrix, got {affine.tolist()}.")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ConfigError(f"Grid affine {affine.tolist()} is singular; give an invertible one.")
        object.__setattr__(self, "affine_rows", tuple(tuple(float(v) for v in r) for r in affine))

    @property
    def affine(self) -> np.ndarray:
        """numpy.ndarray : The 4x4 voxel-to-world matrix (a fresh copy)."""
        return np.array(self.affine_rows, dtype=float)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """tuple of float : Voxel edge lengths in mm along each array axis."""
        sizes = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in sizes)

    def to_dict(self) -> dict:
        """Return ``{"shape": [...], "affine": [[...], ...]}`` (plain Python types)."""
        return {"shape": list(self.shape), "affine": [list(r) for r in self.affine_rows]}

    @classmethod
    def from_dict(cls, raw: dict) -> Grid:
        """Build a grid from :meth:`to_dict` output."""
        try:
            return cls(tuple(raw["shape"]), raw["affine"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"a grid needs 'shape' and 'affine' entries, got {raw!r} ({exc})."
            ) from None

    def to_img(self, data: np.ndarray) -> nib.Nifti1Image:
        """Wrap an array on this grid as a NIfTI image.

        Parameters
        ----------
        data : numpy.ndarray
            Shape ``self.shape`` or ``(*self.shape, C)``. Booleans are stored as
            ``uint8`` and ``float64`` as ``float32``.

        Returns
        -------
        nibabel.Nifti1Image
        """
        data = np.asarray(data)
        if data.shape[:3] != self.shape or data.ndim not in (3, 4):
            raise ShapeError(
                f"data of shape {data.shape} does not fit the grid {self.shape}; expected "
                f"{self.shape} or {self.shape} + (channels,)."
            )
        if data.dtype == np.bool_:
            data = data.astype(np.uint8)
        elif data.dtype == np.float64:
            data = data.astype(np.float32)
        return nib.Nifti1Image(data, self.affine)


def mni_grid(shape: tuple[int, int, int] = DEFAULT_GRID_SHAPE) -> Grid:
    """Return the RAS grid whose voxels tile the MNI152 bounding box exactly.

    The voxel size along each axis is ``MNI_BOX_SIZE / shape`` (3.138 x 3.114 x 3.138 mm
    for the default 58 x 70 x 58) and the first voxel's centre lies half a voxel inside
    :data:`MNI_BOX_ORIGIN`.

    Parameters
    ----------
    shape : tuple of int
        Number of voxels along x, y, z.

    Returns
    -------
    Grid
    """
    shape = _as_shape(shape, "grid shape")
    voxel = np.asarray(MNI_BOX_SIZE) / np.asarray(shape)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = np.asarray(MNI_BOX_ORIGIN) + voxel / 2
    return Grid(shape, affine)


def parse_grid(text: str | tuple | list) -> tuple[int, int, int]:
    """Parse a grid shape such as ``"58x70x58"``.

    Parameters
    ----------
    text : str or sequence of int
        Three positive integers separated by ``x``, commas or spaces, or a single
        integer for a cube (``"64"``); a sequence of three integers is passed through.

    Returns
    -------
    tuple of int

    Raises
    ------
    ConfigError
        On malformed text or non-positive values.
    """
    if not isinstance(text, str):
        return _as_shape(text, "grid shape")
    parts = [p for p in re.split(r"[x×,\s]+", text.strip().lower()) if p]
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise ConfigError(
            f"grid shape {text!r} is not three positive integers; write it like '58x70x58' "
            "(x, y, z voxels)."
        )
    return values


def reorient_canonical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorder and flip the array axes to the closest RAS+ orientation.

    A thin wrapper of :func:`nibabel.as_closest_canonical`; the world coordinates of
    every voxel are unchanged.
    """
    return nib.as_closest_canonical(img)


def resample_to_grid(img: nib.Nifti1Image, grid: Grid, order: int = 1) -> np.ndarray:
    """Resample an image onto a grid through both affines (world space).

    Each grid voxel centre is mapped to world coordinates by ``grid.affine`` and from
    there into the source array by the inverse of ``img.affine``; the value is
    interpolated there (:func:`scipy.ndimage.affine_transform`). Voxels outside the
    source's field of view are zero.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        A 3D image.
    grid : Grid
        The target grid.
    order : int
        Spline order: 0 nearest neighbour, 1 trilinear (default), 3 cubic.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``grid.shape``.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ShapeError(f"resample_to_grid needs a 3D image, got shape {data.shape}.")
    vox_to_vox = np.linalg.solve(np.asarray(img.affine, dtype=float), grid.affine)
    return ndimage.affine_transform(
        data,
        vox_to_vox[:3, :3],
        offset=vox_to_vox[:3, 3],
        output_shape=grid.shape,
        output=np.float32,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=order > 1,
    )


def normalize(
    data: np.ndarray, method: str = "zscore", mask: np.ndarray | None = None
) -> np.ndarray:
    """Normalise voxel intensities.

    Parameters
    ----------
    data : numpy.ndarray
        The volume.
    method : {"zscore", "minmax", "none"}
        ``"zscore"``: subtract the mean and divide by the standard deviation of the
        non-zero voxels (or of the ``mask`` voxels); voxels outside stay zero.
        ``"minmax"``: scale to [0, 1] with the minimum and maximum of all voxels (or of
        the ``mask`` voxels). ``"none"``: unchanged.
    mask : numpy.ndarray of bool, optional
        Voxels used for the statistics; voxels outside it are set to zero.

    Returns
    -------
    numpy.ndarray
        ``float32``, same shape. A constant selection gives zeros (no division by zero).
    """
    if method not in NORMALIZATIONS:
        raise ConfigError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}.")
    data = np.asarray(data, dtype=np.float32)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise ShapeError(f"mask of shape {mask.shape} does not match data {data.shape}.")
    if method == "none":
        return data if mask is None else np.where(mask, data, np.float32(0))
    select = (data != 0) if (method == "zscore" and mask is None) else mask
    values = data if select is None else data[select]
    out = np.zeros_like(data)
    if values.size == 0:
        return out
    values = values.astype(np.float64)
    if method == "zscore":
        shift, scale = values.mean(), values.std()
    else:
        shift, scale = values.min(), values.max() - values.min()
    scaled = (data - np.float32(shift)) / np.float32(scale if scale > 0 else 1.0)
    if select is None:
        return scaled.astype(np.float32)
    out[select] = scaled[select]
    return out


@functools.lru_cache(maxsize=8)
def _mni_brain_mask_cached(grid: Grid) -> np.ndarray:
    from nilearn.datasets import load_mni152_brain_mask

    template = load_mni152_brain_mask()
    mask = resample_to_grid(template, grid, order=1) >= 0.5
    mask.setflags(write=False)
    return mask


def mni_brain_mask(grid: Grid) -> np.ndarray:
    """Return nilearn's MNI152 brain mask resampled to a grid.

    The 1 mm mask shipped with nilearn (:func:`nilearn.datasets.load_mni152_brain_mask`)
    is resampled trilinearly through the affines and thresholded at 0.5. Results are
    cached per grid.

    Parameters
    ----------
    grid : Grid

    Returns
    -------
    numpy.ndarray of bool
        Shape ``grid.shape`` (a fresh, writable copy).
    """
    return _mni_brain_mask_cached(grid).copy()


@dataclass(frozen=True)
class PreprocessConfig:
    """How scans are brought to the model grid.

    Parameters
    ----------
    grid_shape : tuple of int
        Shape of the MNI grid (see :func:`mni_grid`); text like ``"58x70x58"`` is
        accepted.
    normalization : {"zscore", "minmax", "none"}
        Intensity normalisation (see :func:`normalize`).
    brain_mask : bool
        Zero the voxels outside the MNI152 brain mask (and compute the normalisation
        statistics inside it).
    """

    grid_shape: tuple[int, int, int] = DEFAULT_GRID_SHAPE
    normalization: str = "zscore"
    brain_mask: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid_shape", parse_grid(self.grid_shape))
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"preprocess.normalization must be one of {', '.join(NORMALIZATIONS)}, got "
                f"{self.normalization!r}."
            )
        if not isinstance(self.brain_mask, bool | np.bool_):
            raise ConfigError(
                f"preprocess.brain_mask must be true or false, got {self.brain_mask!r}."
            )
        object.__setattr__(self, "brain_mask", bool(self.brain_mask))

    @property
    def grid(self) -> Grid:
        """Grid : The MNI grid of :attr:`grid_shape`."""
        return mni_grid(self.grid_shape)

    def to_dict(self) -> dict:
        """Return plain Python types, ready for YAML or hashing."""
        return {
            "grid_shape": list(self.grid_shape),
            "normalization": self.normalization,
            "brain_mask": self.brain_mask,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> PreprocessConfig:
        """Build and validate a config from a mapping (e.g. parsed YAML)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"preprocess: expected a mapping, got {type(raw).__name__}.")
        known = {"grid_shape", "normalization", "brain_mask"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(
                f"preprocess: unknown key(s) {unknown}; expected {', '.join(sorted(known))}."
            )
        return cls(**raw)


def _as_image(img_or_path: nib.Nifti1Image | str | os.PathLike) -> nib.Nifti1Image:
    if isinstance(img_or_path, str | os.PathLike):
        return load_img(img_or_path)
    if not isinstance(img_or_path, nib.spatialimages.SpatialImage):
        raise ImageError(f"expected a NIfTI image or a path, got {type(img_or_path).__name__}.")
    check_volume(np.asarray(img_or_path.dataobj), name="the given image")
    return img_or_path


def preprocess_img(
    img_or_path: nib.Nifti1Image | str | os.PathLike, config: PreprocessConfig
) -> np.ndarray:
    """Load (if needed), reorient, resample, mask and normalise one scan.

    Parameters
    ----------
    img_or_path : nibabel.Nifti1Image or path-like
        The scan; paths go through :func:`~brainmaps.data.io.load_img`.
    config : PreprocessConfig

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``config.grid_shape``.

    Raises
    ------
    ImageError
        If the image is invalid or does not overlap the MNI box after resampling.
    """
    img = reorient_canonical(_as_image(img_or_path))
    grid = config.grid
    data = resample_to_grid(img, grid, order=1)
    if not np.any(data):
        name = img_or_path if isinstance(img_or_path, str | os.PathLike) else "the image"
        raise ImageError(
            f"{name} is empty after resampling to the MNI grid: its field of view does not "
            "overlap the MNI152 box. Check that the image is in MNI space and that its "
            "affine (sform/qform) is right."
        )
    mask = mni_brain_mask(grid) if config.brain_mask else None
    return np.ascontiguousarray(normalize(data, config.normalization, mask=mask))
