"""Find and load the maps of a run folder, its brain mask and its ground truth.

Torch-free: every analysis reads maps through these functions, so maps written by
another tool into ``<run>/maps/<method>/`` are analysed the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from brainmaps.data.preprocess import mni_brain_mask
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.validation import check_img

__all__ = [
    "as_img",
    "class_mean_maps",
    "ground_truth_mask",
    "list_map_methods",
    "on_grid_of",
    "run_brain_mask",
    "same_grid",
]


def as_img(img: nib.Nifti1Image | str | os.PathLike, name: str = "img") -> nib.Nifti1Image:
    """Return ``img`` as a 3D in-memory NIfTI image (a path is loaded).

    Parameters
    ----------
    img : nibabel.Nifti1Image or str or os.PathLike
        An image or the path of a ``.nii`` / ``.nii.gz`` file.
    name : str
        Parameter name used in error messages.

    Returns
    -------
    nibabel.Nifti1Image
        Float32 data; a 4D image with one volume is squeezed to 3D.

    Raises
    ------
    ImageError
        If the file is missing, unreadable or too large, the image is not 3D, its affine
        is invalid or it holds non-finite values (see
        :func:`brainmaps.validation.check_img`).
    """
    return check_img(img, name=name, contrast=False)


def list_map_methods(run: str | os.PathLike | RunFolder) -> list[str]:
    """Methods with maps in ``<run>/maps/`` (folders holding a ``maps.tsv``), sorted.

    Parameters
    ----------
    run : str, os.PathLike or RunFolder

    Returns
    -------
    list of str
    """
    return open_run(run).layout.map_methods()


def class_mean_maps(run: str | os.PathLike | RunFolder, method: str) -> dict[str, nib.Nifti1Image]:
    """The class-mean maps of one method: ``{class: img}`` plus ``"conjoined"``.

    Parameters
    ----------
    run : str, os.PathLike or RunFolder
    method : str
        A folder under ``<run>/maps/``.

    Returns
    -------
    dict of str to nibabel.Nifti1Image
        Keys are the class names in index order, then ``"conjoined"`` (the sum of the
        class means); for a regression run those of ``"all"``, ``"young"``, ``"old"``,
        ``"gap_positive"`` and ``"gap_negative"`` that exist (see
        :meth:`brainmaps.tasks.Regression.map_groups`).

    Raises
    ------
    ConfigError
        If the method has no class-mean maps (run ``brainmaps explain`` first).
    """
    r = open_run(run)
    folder = r.layout.maps_dir(method)
    found = {n: r.layout.group_map(method, n) for n in r.task.map_names()}
    found = {n: p for n, p in found.items() if p.is_file()}
    if not found:
        raise ConfigError(
            f"no class-mean maps in {folder}; run 'brainmaps explain {r.path} "
            f"--methods {method}' first."
        )
    return {n: as_img(p, name=str(p)) for n, p in found.items()}


def run_brain_mask(run: str | os.PathLike | RunFolder) -> nib.Nifti1Image:
    """The MNI152 brain mask on the run's model grid (uint8 image).

    Parameters
    ----------
    run : str, os.PathLike or RunFolder

    Returns
    -------
    nibabel.Nifti1Image
    """
    r = open_run(run)
    return nib.Nifti1Image(mni_brain_mask(r.grid).astype(np.uint8), r.grid.affine)


def ground_truth_mask(
    run: str | os.PathLike | RunFolder, kind: str = "group"
) -> nib.Nifti1Image | None:
    """The planted-effect mask of a synthetic cohort the run was trained on, if any.

    Parameters
    ----------
    run : str, os.PathLike or RunFolder
    kind : {"group", "age"}
        ``ground_truth_mask.nii.gz`` (the group effect) or
        ``ground_truth_age_mask.nii.gz`` (the age effect).

    Returns
    -------
    nibabel.Nifti1Image or None
        The mask on its own grid (1 mm or the cohort's), or ``None`` when the run's
        data source is not a synthetic cohort.
    """
    if kind not in ("group", "age"):
        raise ConfigError(f"kind must be 'group' or 'age', got {kind!r}.")
    r = open_run(run)
    source = r.config.data.source
    if not source:
        return None
    name = "ground_truth_mask.nii.gz" if kind == "group" else "ground_truth_age_mask.nii.gz"
    run_path = r.path
    # a relative source was relative to the working directory of 'brainmaps train'; the
    # demo layout keeps the cohort beside the run folder
    for folder in (Path(source), run_path.parent / Path(source).name):
        if (folder / name).is_file():
            return as_img(folder / name, name=str(folder / name))
    return None


def same_grid(a: nib.Nifti1Image, b: nib.Nifti1Image, atol: float = 1e-3) -> bool:
    """Whether two images share shape and affine (within ``atol`` mm)."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)


def on_grid_of(
    img: nib.Nifti1Image, reference: nib.Nifti1Image, interpolation: str = "continuous"
) -> np.ndarray:
    """The voxels of ``img`` on the grid of ``reference``, resampled through the affines.

    Never by array shape: images on different grids, voxel sizes or orientations are
    brought together by their world coordinates (:func:`nilearn.image.resample_to_img`).
    Voxels outside ``img``'s field of view become 0.

    Parameters
    ----------
    img, reference : nibabel.Nifti1Image
    interpolation : {"continuous", "linear", "nearest"}
        ``"nearest"`` for label images and masks.

    Returns
    -------
    numpy.ndarray
        Shape ``reference.shape[:3]``, float32.
    """
    if same_grid(img, reference):
        return np.asarray(img.dataobj, dtype=np.float32)
    from nilearn.image import resample_to_img

    kwargs = {"force_resample": True, "copy_header": True}
    out = resample_to_img(img, reference, interpolation=interpolation, fill_value=0, **kwargs)
    return np.asarray(out.dataobj, dtype=np.float32)
