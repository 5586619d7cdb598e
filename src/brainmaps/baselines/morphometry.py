"""Regional volumes and mean intensities from an atlas: morphometry without FreeSurfer.

For each scan and each atlas region, :func:`morphometry_table` measures the volume
(mm³) of the region's tissue and its mean intensity, so that the morphometry baselines
(LR / KNN / XGBoost) run on any cohort: synthetic cohorts, a run's preprocessed volumes,
or segmentations (tissue probability maps). The atlas is resampled onto each image's
grid through both affines (nearest neighbour), never by array shape.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainmaps.data.io import load_img
from brainmaps.data.preprocess import Grid, resample_to_grid
from brainmaps.data.tables import read_label_table
from brainmaps.data.thresholds import otsu_threshold
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ImageError, ShapeError
from brainmaps.utils import atomic_path

__all__ = [
    "MODES",
    "morphometry_table",
    "otsu_threshold",
    "read_atlas_labels",
    "run_morphometry",
]

#: What the images hold: T1 intensities, or tissue probabilities in [0, 1].
MODES = ("intensity", "segmentation")


def read_atlas_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read an atlas label table, with names usable as column names.

    The table is read by :func:`brainmaps.data.tables.read_label_table` (TSV/CSV with an
    index and a name column, or a FreeSurfer lookup table; background rows dropped), as
    :func:`brainmaps.analysis.atlas.read_labels` reads it.

    Returns
    -------
    pandas.DataFrame
        ``index`` (int, > 0) and ``name`` (str, whitespace replaced by ``_``, made unique).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"atlas label table {path} does not exist; pass --labels TABLE.")
    table = read_label_table(path)
    index = table["index"].astype(int)
    names = [
        re.sub(r"\s+", "_", str(n).strip()) or f"region_{i}"
        for n, i in zip(table["name"], index, strict=True)
    ]
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[j] = f"{name}_{int(index.iloc[j])}"
    return pd.DataFrame({"index": index.to_numpy(), "name": names})


class _Atlas:
    """An atlas resampled (nearest neighbour) onto each image grid met, once per grid."""

    def __init__(self, atlas_img: nib.Nifti1Image, labels: pd.DataFrame) -> None:
        self.img, self.labels = atlas_img, labels
        self.lut = np.zeros(int(labels["index"].max()) + 1, dtype=np.int64)
        self.lut[labels["index"].to_numpy()] = np.arange(1, len(labels) + 1)
        self._grids: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.empty: set[str] = set()

    def on_grid(self, shape: tuple, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Region position (1..R, 0 elsewhere) of each voxel and voxel count per region."""
        key = (tuple(shape), np.round(affine, 6).tobytes())
        if key not in self._grids:
            values = np.rint(resample_to_grid(self.img, Grid(shape, affine), order=0))
            values = values.astype(np.int64).ravel()
            inside = (values > 0) & (values < len(self.lut))
            pos = np.where(inside, self.lut[np.where(inside, values, 0)], 0)
            counts = np.bincount(pos, minlength=len(self.labels) + 1)
            self.empty |= set(self.labels["name"][counts[1:] == 0])
            self._grids[key] = (pos, counts)
        return self._grids[key]


def _measure(data, affine, atlas: _Atlas, mode: str, threshold) -> np.ndarray:
    """Volumes then means of the regions for one image."""
    data = np.asarray(data, dtype=np.float64)
    pos, counts = atlas.on_grid(data.shape, np.asarray(affine, dtype=float))
    x = data.ravel()
    n = len(counts)
    sums = np.bincount(pos, weights=x, minlength=n)
    if mode == "segmentation" and threshold is None:
        inside = sums  # probability-weighted voxel count
    else:
        cut = otsu_threshold(x[pos > 0]) if threshold in (None, "otsu") else float(threshold)
        inside = np.bincount(pos, weights=(x > cut).astype(float), minlength=n)
    voxel_volume = round(abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))), 9)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return np.concatenate([inside[1:] * voxel_volume, means[1:]])


def _check_segmentation(data, name: str) -> None:
    lo, hi = float(np.min(data)), float(np.max(data))
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        raise ImageError(
            f"{name} holds values in [{lo:.4g}, {hi:.4g}] but segmentation mode needs tissue "
            "probabilities in [0, 1]; use intensity mode for T1 images."
        )


def _frame(values: np.ndarray, names, subjects, sessions) -> pd.DataFrame:
    columns = {"subject": [str(s) for s in subjects]}
    if sessions is not None and any(str(s) for s in sessions):
        columns["session"] = [str(s) for s in sessions]
    r = len(names)
    for j, name in enumerate(names):
        columns[f"{name}_volume"] = values[:, j]
        columns[f"{name}_mean"] = values[:, r + j]
    return pd.DataFrame(columns)


def _measure_all(items: Iterable, n: int, atlas: _Atlas, mode, threshold, progress):
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}.")
    if isinstance(threshold, str) and threshold != "otsu":
        raise ConfigError(f"threshold must be a number, 'otsu' or None, got {threshold!r}.")
    values = np.empty((n, 2 * len(atlas.labels)))
    for i, (data, affine, name) in enumerate(tqdm(items, total=n, disable=not progress)):
        if mode == "segmentation":
            _check_segmentation(data, name)
        values[i] = _measure(data, affine, atlas, mode, threshold)
    if atlas.empty:
        warnings.warn(
            f"{len(atlas.empty)} atlas region(s) have no voxel on the image grid "
            f"({', '.join(sorted(atlas.empty)[:10])}); their volume is 0 and their mean NaN. "
            "Use a finer image grid or a coarser atlas.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return values


def _load_atlas(atlas_img, labels) -> _Atlas:
    img = (
        load_img(atlas_img, labels=True) if isinstance(atlas_img, str | os.PathLike) else atlas_img
    )
    if len(img.shape) != 3:
        raise ShapeError(f"the atlas must be a 3D label image, got shape {img.shape}.")
    table = labels if isinstance(labels, pd.DataFrame) else read_atlas_labels(labels)
    return _Atlas(img, table)


def morphometry_table(
    images: Sequence,
    atlas_img,
    labels,
    *,
    subjects: Sequence[str],
    sessions: Sequence[str] | None = None,
    mode: str = "intensity",
    threshold: float | str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Measure every atlas region in every image.

    Parameters
    ----------
    images : sequence
        NIfTI paths or images, or ``(array, affine)`` pairs (e.g. preprocessed volumes
        with their grid's affine).
    atlas_img : str, os.PathLike or nibabel.Nifti1Image
        3D integer label image (0 = background), in the images' world space.
    labels : str, os.PathLike or pandas.DataFrame
        Label table (see :func:`read_atlas_labels`).
    subjects, sessions : sequence of str
        Identify the rows of the output.
    mode : {"intensity", "segmentation"}
        ``"intensity"``: ``<region>_volume`` is the volume of the region's voxels above
        ``threshold`` (default: Otsu's threshold over the atlas voxels of the image, so
        the brighter tissue), ``<region>_mean`` the mean intensity. ``"segmentation"``:
        images are tissue probabilities in [0, 1]; the volume is the probability-weighted
        volume (or the volume above ``threshold`` if one is given), the mean the mean
        probability.
    threshold : float, "otsu" or None
    progress : bool

    Returns
    -------
    pandas.DataFrame
        ``subject`` (``session`` when any is non-empty), then ``<region>_volume`` (mm³)
        and ``<region>_mean`` for each region of ``labels``.
    """
    if len(subjects) != len(images):
        raise ShapeError(f"{len(images)} images but {len(subjects)} subjects; give one each.")
    atlas = _load_atlas(atlas_img, labels)
    values = _measure_all(_iter_images(images), len(images), atlas, mode, threshold, progress)
    return _frame(values, atlas.labels["name"].tolist(), subjects, sessions)


def _cohort_scans(source: Path, target: str | None, options: dict) -> pd.DataFrame:
    """The scans of a cohort: those ``brainmaps train`` uses with ``target``, else all."""
    if target:
        from brainmaps.data.cohort import load_cohort

        return load_cohort(source, target, **options).table
    from brainmaps.data.pipeline import list_scans

    options = {k: v for k, v in options.items() if k != "drop_missing"}
    return list_scans(source, **options)


class _VolumesOnGrid(Sequence):
    """``(volume, affine)`` pairs read lazily, one volume at a time."""

    def __init__(self, volumes, affine: np.ndarray) -> None:
        self.volumes, self.affine = volumes, affine

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i):
        return self.volumes[i], self.affine


def _iter_images(images: Sequence):
    for i in range(len(images)):
        item = images[i]
        if isinstance(item, tuple):
            yield item[0], item[1], f"image {i}"
        else:
            img = load_img(item) if isinstance(item, str | os.PathLike) else item
            yield np.asarray(img.dataobj, dtype=np.float32), img.affine, f"image {item}"


def run_morphometry(
    source: str | os.PathLike,
    atlas_img,
    labels,
    out: str | os.PathLike | None = None,
    *,
    target: str | None = None,
    mode: str = "intensity",
    threshold: float | str | None = None,
    progress: bool = True,
    **cohort_options,
) -> pd.DataFrame:
    """Measure the atlas regions of a run folder's volumes or of a cohort's scans.

    Parameters
    ----------
    source : str or os.PathLike
        A run folder of ``brainmaps train`` (its cached preprocessed volumes on the run
        grid are measured), or a cohort table / BIDS folder (its images as they are).
    atlas_img, labels, mode, threshold, progress
        See :func:`morphometry_table`.
    out : str or os.PathLike, optional
        TSV written atomically.
    target : str, optional
        Label column of a cohort source: the rows are then those ``brainmaps train``
        uses (:func:`~brainmaps.data.cohort.load_cohort`, e.g. scans with a missing
        label dropped with ``drop_missing``); not written to the output. Without it
        every scan of the cohort is measured (regional volumes need no label).
    **cohort_options
        Passed to :func:`~brainmaps.data.cohort.load_cohort` (``suffix``,
        ``subject_col``, ``path_col``, ``drop_missing``) or, without ``target``, to
        :func:`~brainmaps.data.pipeline.list_scans` (``drop_missing`` ignored).

    Returns
    -------
    pandas.DataFrame
        See :func:`morphometry_table`.
    """
    source = Path(source)
    if (source / "config.yaml").is_file():
        from brainmaps.run.folder import open_run

        run = open_run(source)
        volumes, affine = run.volumes(progress=progress), run.grid.affine
        images = _VolumesOnGrid(volumes, affine)
        subjects, sessions = run.table["subject"], run.table["session"]
    else:
        table = _cohort_scans(source, target, cohort_options)
        images = table["path"].tolist()
        subjects, sessions = table["subject"], table["session"]
    table = morphometry_table(
        images,
        atlas_img,
        labels,
        subjects=list(subjects),
        sessions=list(sessions),
        mode=mode,
        threshold=threshold,
        progress=progress,
    )
    if out is not None:
        with atomic_path(out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return table
