"""Quality control of registered images: correlation with the cohort mean, flags, mosaic.

As in Lu et al. (BrainImageNet): each registered image is correlated (Pearson, inside the
MNI brain mask) with the mean of all images; an image whose correlation is below the mean
minus two standard deviations of the correlations is flagged as a likely failed
registration. :func:`plot_qc_mosaic` draws one slice per image with the template's brain
contour so that flagged images can be checked by eye.

Images are streamed from disk (two passes), so a cohort never has to fit in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.utils import atomic_path

__all__ = ["cohort_mean", "correlations", "flag_outliers", "plot_qc_mosaic", "qc_correlations"]

ImageLike = nib.spatialimages.SpatialImage | np.ndarray | str | os.PathLike


def _data(img: ImageLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if isinstance(img, str | os.PathLike):
        img = nib.load(os.fspath(img))
    data = np.asarray(img.dataobj if hasattr(img, "dataobj") else img, dtype=np.float32)
    if shape is not None and data.shape != tuple(shape):
        raise ShapeError(
            f"image of shape {data.shape} does not match the mask {tuple(shape)}; QC needs "
            "images on one grid (e.g. the output of preprocess_cohort)."
        )
    return data


def cohort_mean(imgs: Sequence[ImageLike], mask: np.ndarray) -> np.ndarray:
    """Return the voxel-wise mean of images (zero outside ``mask``).

    Parameters
    ----------
    imgs : sequence of NIfTI images, arrays or paths
        Images on one grid.
    mask : numpy.ndarray of bool
        Voxels to average, the grid's shape.

    Returns
    -------
    numpy.ndarray
        ``float32``, the mask's shape.
    """
    mask = np.asarray(mask, dtype=bool)
    if len(imgs) == 0:
        raise ConfigError("cohort_mean needs at least one image, got none.")
    total = np.zeros(int(mask.sum()), dtype=np.float64)
    for img in imgs:
        total += _data(img, mask.shape)[mask]
    mean = np.zeros(mask.shape, dtype=np.float32)
    mean[mask] = total / len(imgs)
    return mean


def correlations(imgs: Sequence[ImageLike], reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation of each image with a reference, inside a mask.

    Parameters
    ----------
    imgs : sequence of NIfTI images, arrays or paths
    reference : numpy.ndarray
        Same grid (e.g. :func:`cohort_mean` or the template).
    mask : numpy.ndarray of bool

    Returns
    -------
    numpy.ndarray
        ``float64``, one value per image; 0 for an image constant inside the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    ref = np.asarray(reference, dtype=np.float64)[mask]
    ref = ref - ref.mean()
    ref_norm = np.linalg.norm(ref)
    out = np.zeros(len(imgs))
    for i, img in enumerate(imgs):
        values = _data(img, mask.shape)[mask].astype(np.float64)
        values -= values.mean()
        norm = np.linalg.norm(values) * ref_norm
        out[i] = float(values @ ref / norm) if norm > 0 else 0.0
    return out


def qc_correlations(imgs: Sequence[ImageLike], mask: np.ndarray) -> np.ndarray:
    """Correlation of each image with the cohort mean (the mean includes the image)."""
    return correlations(imgs, cohort_mean(imgs, mask), mask)


def flag_outliers(values: Sequence[float], n_sd: float = 2.0) -> np.ndarray:
    """Flag values below ``mean - n_sd * SD`` (population SD of all values).

    With ``n`` values one outlier can lie at most ``(n - 1) / sqrt(n)`` SD from the
    mean, so with ``n_sd=2`` nothing is flagged among 5 values or fewer.

    Returns
    -------
    numpy.ndarray of bool
    """
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return np.zeros(values.shape, dtype=bool)
    return values < values.mean() - n_sd * values.std()


def _slice(data: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(data, index, axis=axis).T  # rows: the later axis, for imshow


def _slice_index(img: ImageLike, shape, axis: int, coord: float | None) -> int:
    if coord is None or not hasattr(img, "affine"):
        return shape[axis] // 2
    affine = np.asarray(img.affine, dtype=float)
    # the voxel whose centre lies nearest the plane world[axis] == coord (RAS grids)
    point = affine[:, 3].copy()
    point[axis] = coord
    voxel = np.linalg.solve(affine, point)
    return int(np.clip(round(voxel[axis]), 0, shape[axis] - 1))


def plot_qc_mosaic(
    imgs: Sequence[ImageLike],
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    flagged: Sequence[bool] | None = None,
    contour: np.ndarray | None = None,
    axis: int = 2,
    coord: float | None = 10.0,
    ncols: int = 8,
) -> None:
    """Draw one slice per image in a grid and save it as a PNG, atomically.

    Parameters
    ----------
    imgs : sequence of NIfTI images, arrays or paths
        Images on one grid.
    path : path-like
        The ``.png`` to write.
    titles : sequence of str, optional
        One per image (default: the index).
    flagged : sequence of bool, optional
        Images whose title is drawn in red.
    contour : numpy.ndarray of bool, optional
        A mask on the same grid (e.g. the MNI brain mask) drawn as a yellow contour.
    axis : int
        Slice axis: 2 axial, 0 sagittal, 1 coronal (for RAS grids).
    coord : float or None
        World coordinate (mm) of the slice along ``axis`` (default z = 10 mm, through
        the ventricles); ``None`` or arrays without affine: the middle slice.
    ncols : int
        Panels per row.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(imgs) == 0:
        raise ConfigError("plot_qc_mosaic needs at least one image, got none.")
    first = nib.load(os.fspath(imgs[0])) if isinstance(imgs[0], str | os.PathLike) else imgs[0]
    shape = _data(first).shape
    index = _slice_index(first, shape, axis, coord)
    titles = list(titles) if titles is not None else [str(i) for i in range(len(imgs))]
    flagged = np.zeros(len(imgs), bool) if flagged is None else np.asarray(flagged, bool)
    ncols = max(1, min(ncols, len(imgs)))
    nrows = math.ceil(len(imgs) / ncols)
    fig = Figure(figsize=(1.6 * ncols, 1.8 * nrows), facecolor="black")
    FigureCanvasAgg(fig)
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        plane = _slice(_data(img, shape), axis, index)
        top = float(np.percentile(plane, 99.5))
        ax.imshow(plane, cmap="gray", origin="lower", vmin=0, vmax=top if top > 0 else 1.0)
        if contour is not None:
            outline = _slice(np.asarray(contour, dtype=float), axis, index)
            ax.contour(outline, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(titles[i], fontsize=7, color="red" if flagged[i] else "white")
        ax.set_axis_off()
    fig.tight_layout(pad=0.3)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80, facecolor="black")
