"""Overlap between attribution maps: binarisation, Dice, Jaccard and rank correlation.

Dice and Jaccard are computed between the *foregrounds* of two binarised maps inside a
brain mask. Voxels where both maps are background do not count as agreement: the code of
Kan et al. (2020) compared whole binary arrays voxel by voxel, so two maps whose
foregrounds are disjoint still scored close to 1 because most of the volume is background
in both. Here such maps score 0.

Maps from different methods live on different scales (Grad-CAM is non-negative and
smooth, gradients are signed and speckled), so the default threshold keeps the same share
of brain voxels in every map (``"top10%"``). The paper's fixed thresholds are available as
``threshold="paper"``.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmaps.analysis.maps import (
    as_img,
    class_mean_maps,
    list_map_methods,
    on_grid_of,
    run_brain_mask,
)
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ShapeError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.utils import atomic_path

__all__ = [
    "PAPER_THRESHOLDS",
    "binarize",
    "compare_maps",
    "compare_run",
    "dice",
    "jaccard",
    "map_correlation",
    "overlap_matrix",
    "pair_matrix",
]

#: Kan et al. (2020): Meaningful Perturbations and Grad-CAM maps binarised at 0.65 after
#: min-max scaling, guided backpropagation at 0.04.
PAPER_THRESHOLDS = {"meaningful_perturbation": 0.65, "grad_cam": 0.65, "guided_backprop": 0.04}

ImgLike = nib.Nifti1Image | str | os.PathLike
_THRESHOLD_HELP = (
    "use 'topK%' (the K % highest brain voxels, e.g. 'top10%'), 'pNN' (above the NN-th "
    "percentile inside the mask, e.g. 'p95'), a number (absolute value), or 'paper' with "
    f"method= one of {sorted(PAPER_THRESHOLDS)}"
)


def _mask_array(mask_img: ImgLike | np.ndarray | None, ref: nib.Nifti1Image) -> np.ndarray:
    if mask_img is None:
        return np.ones(ref.shape[:3], dtype=bool)
    if isinstance(mask_img, np.ndarray):
        if mask_img.shape != ref.shape[:3]:
            raise ShapeError(
                f"mask_img: array of shape {mask_img.shape} does not match the map's grid "
                f"{ref.shape[:3]}; pass a NIfTI mask (resampled through its affine) instead."
            )
        return mask_img.astype(bool)
    mask = on_grid_of(as_img(mask_img, "mask_img"), ref, interpolation="nearest") > 0.5
    if not mask.any():
        raise ConfigError("mask_img: the mask is empty on the map's grid; check its affine.")
    return mask


def _parse_threshold(threshold: str | float, method: str | None) -> tuple[str, float]:
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        return "absolute", float(threshold)
    text = str(threshold).strip().lower()
    if text == "paper":
        if method not in PAPER_THRESHOLDS:
            raise ConfigError(
                f"threshold='paper' needs method= one of {sorted(PAPER_THRESHOLDS)}, got "
                f"{method!r}; use 'top10%' for other methods."
            )
        return "scaled", PAPER_THRESHOLDS[method]
    match = re.fullmatch(r"top\s*([0-9.]+)\s*%?", text)
    if match and 0 < float(match.group(1)) <= 100:
        return "top", float(match.group(1))
    match = re.fullmatch(r"p\s*([0-9.]+)", text)
    if match and 0 <= float(match.group(1)) < 100:
        return "percentile", float(match.group(1))
    try:
        return "absolute", float(text)
    except ValueError:
        raise ConfigError(f"threshold: cannot read {threshold!r}; {_THRESHOLD_HELP}.") from None


def binarize(
    img: ImgLike,
    mask_img: ImgLike | np.ndarray | None = None,
    threshold: str | float = "top10%",
    *,
    method: str | None = None,
    absolute: bool = True,
) -> np.ndarray:
    """Binarise a map inside a brain mask.

    Parameters
    ----------
    img : nibabel.Nifti1Image or path
        A 3D map.
    mask_img : nibabel.Nifti1Image, path or numpy.ndarray, optional
        Brain mask; resampled to ``img``'s grid through the affines (nearest neighbour).
        A boolean array must already be on ``img``'s grid. ``None`` uses every voxel.
    threshold : str or float
        ``"top10%"`` (default): exactly the 10 % of mask voxels with the highest values.
        ``"p95"``: voxels above the 95th percentile inside the mask. A number: voxels
        above it. ``"paper"``: Kan et al.'s thresholds after min-max scaling to [0, 1]
        inside the mask (0.65 for Meaningful Perturbations and Grad-CAM, 0.04 for guided
        backpropagation; needs ``method``).
    method : str, optional
        Attribution method, for ``threshold="paper"``.
    absolute : bool
        Rank voxels by absolute value (default: where the model looks, whatever the
        sign). ``False`` keeps the signed values, so only positive evidence counts.

    Returns
    -------
    numpy.ndarray of bool
        On ``img``'s grid; ``False`` outside the mask.
    """
    img = as_img(img)
    mask = _mask_array(mask_img, img)
    values = np.asarray(img.dataobj, dtype=np.float64)
    values = np.abs(values) if absolute else values
    inside = values[mask]
    kind, level = _parse_threshold(threshold, method)
    out = np.zeros(mask.shape, dtype=bool)
    if kind == "top":
        k = round(inside.size * level / 100.0)
        order = np.argsort(-inside, kind="stable")[:k]
        selected = np.zeros(inside.size, dtype=bool)
        selected[order] = True
    elif kind == "percentile":
        selected = inside > np.percentile(inside, level)
    elif kind == "scaled":
        lo, hi = inside.min(), inside.max()
        scaled = (inside - lo) / (hi - lo) if hi > lo else np.zeros_like(inside)
        selected = scaled > level
    else:
        selected = inside > level
    out[mask] = selected
    return out


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ShapeError(
            f"binary maps of shapes {a.shape} and {b.shape} cannot be compared; bring them "
            "to one grid first (binarize resamples masks through affines)."
        )


def dice(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` between two foregrounds.

    Background voxels agreeing in both maps do not count. ``NaN`` (with a warning) when
    both foregrounds are empty.

    Parameters
    ----------
    a, b : numpy.ndarray of bool
        Binary maps on one grid.
    mask : numpy.ndarray of bool, optional
        Only voxels inside it count.

    Returns
    -------
    float
    """
    a, b = _restrict(a, b, mask)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        warnings.warn("dice: both maps are empty; returning NaN.", BrainmapsWarning, 2)
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def jaccard(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Jaccard index ``|A∩B| / |A∪B|`` between two foregrounds (``NaN`` if both empty).

    Parameters
    ----------
    a, b : numpy.ndarray of bool
    mask : numpy.ndarray of bool, optional

    Returns
    -------
    float
    """
    a, b = _restrict(a, b, mask)
    union = int(np.logical_or(a, b).sum())
    if union == 0:
        warnings.warn("jaccard: both maps are empty; returning NaN.", BrainmapsWarning, 2)
        return float("nan")
    return int(np.logical_and(a, b).sum()) / union


def _restrict(a, b, mask) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    _check_pair(a, b)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        _check_pair(a, mask)
        a, b = a & mask, b & mask
    return a, b


def map_correlation(
    img_a: ImgLike,
    img_b: ImgLike,
    mask_img: ImgLike | np.ndarray | None = None,
    *,
    absolute: bool = False,
) -> tuple[float, float]:
    """Spearman and Pearson correlation of two maps' values inside a mask.

    ``img_b`` is resampled onto ``img_a``'s grid through the affines when they differ.

    Parameters
    ----------
    img_a, img_b : nibabel.Nifti1Image or path
    mask_img : nibabel.Nifti1Image, path or numpy.ndarray, optional
    absolute : bool
        Correlate absolute values (as :func:`binarize` ranks them by default).

    Returns
    -------
    (float, float)
        Spearman's rho and Pearson's r (``NaN`` when a map is constant in the mask).
    """
    from scipy import stats  # scipy.stats is slow to import; load it on use

    a_img = as_img(img_a, "img_a")
    mask = _mask_array(mask_img, a_img)
    a = np.asarray(a_img.dataobj, dtype=np.float64)[mask]
    b = on_grid_of(as_img(img_b, "img_b"), a_img).astype(np.float64)[mask]
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return float(stats.spearmanr(a, b).statistic), float(stats.pearsonr(a, b).statistic)


def compare_maps(
    img_a: ImgLike,
    img_b: ImgLike,
    mask_img: ImgLike | np.ndarray | None = None,
    threshold: str | float = "top10%",
    *,
    methods: tuple[str | None, str | None] = (None, None),
    absolute: bool = True,
) -> dict[str, float]:
    """Dice, Jaccard, Spearman and Pearson between two maps.

    Parameters
    ----------
    img_a, img_b : nibabel.Nifti1Image or path
        ``img_b`` is resampled onto ``img_a``'s grid if needed.
    mask_img : nibabel.Nifti1Image, path or numpy.ndarray, optional
        Brain mask (on ``img_a``'s grid if an array).
    threshold : str or float
        See :func:`binarize`.
    methods : tuple of str
        Method names of the two maps (for ``threshold="paper"``).
    absolute : bool
        See :func:`binarize`.

    Returns
    -------
    dict
        ``dice``, ``jaccard``, ``spearman``, ``pearson`` (of the values ``binarize``
        ranks: absolute values when ``absolute``), ``n_a``, ``n_b`` (foreground voxel
        counts).
    """
    a_img = as_img(img_a, "img_a")
    b_img = as_img(img_b, "img_b")
    b_img = nib.Nifti1Image(on_grid_of(b_img, a_img), a_img.affine)
    mask = _mask_array(mask_img, a_img)
    bin_a = binarize(a_img, mask, threshold, method=methods[0], absolute=absolute)
    bin_b = binarize(b_img, mask, threshold, method=methods[1], absolute=absolute)
    rho, r = map_correlation(a_img, b_img, mask, absolute=absolute)
    return {
        "dice": dice(bin_a, bin_b, mask),
        "jaccard": jaccard(bin_a, bin_b, mask),
        "spearman": rho,
        "pearson": r,
        "n_a": int(bin_a.sum()),
        "n_b": int(bin_b.sum()),
    }


def overlap_matrix(
    imgs: Mapping[str, ImgLike],
    mask_img: ImgLike | np.ndarray | None = None,
    threshold: str | float = "top10%",
    *,
    absolute: bool = True,
) -> pd.DataFrame:
    """Pairwise overlap of named maps: one row per unordered pair.

    Parameters
    ----------
    imgs : mapping of str to image
        Method name -> map (on one grid, or resampled to the first map's grid).
    mask_img : image, path or array, optional
    threshold : str or float
        See :func:`binarize`; with ``"paper"`` the names must be methods the paper
        thresholded.
    absolute : bool

    Returns
    -------
    pandas.DataFrame
        Columns ``method_a``, ``method_b``, ``dice``, ``jaccard``, ``spearman``,
        ``pearson``, ``n_a``, ``n_b``.
    """
    rows = []
    for a, b in itertools.combinations(list(imgs), 2):
        scores = compare_maps(
            imgs[a], imgs[b], mask_img, threshold, methods=(a, b), absolute=absolute
        )
        rows.append({"method_a": a, "method_b": b, **scores})
    return pd.DataFrame(
        rows,
        columns=["method_a", "method_b", "dice", "jaccard", "spearman", "pearson", "n_a", "n_b"],
    )


def compare_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    threshold: str | float = "top10%",
    absolute: bool = True,
) -> Path:
    """Compare every pair of methods' class-mean maps of a run; write ``overlap.tsv``.

    For each class-mean map (each class and ``conjoined``) the methods are compared
    pairwise inside the MNI brain mask on the run's grid.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder with ``maps/<method>/mean_*.nii.gz`` (``brainmaps explain``).
    methods : sequence of str, optional
        Methods to compare (default: every method with maps).
    threshold : str or float
        See :func:`binarize`.
    absolute : bool
        See :func:`binarize`.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/overlap.tsv`` with columns ``map``, ``method_a``, ``method_b``,
        ``threshold``, ``dice``, ``jaccard``, ``spearman``, ``pearson``, ``n_a``, ``n_b``.

    Raises
    ------
    ConfigError
        If fewer than two methods have maps.
    """
    run = open_run(run_dir)
    available = list_map_methods(run)
    methods = list(methods) if methods else available
    missing = sorted(set(methods) - set(available))
    if missing:
        raise ConfigError(
            f"methods {missing} have no maps in {run.layout.maps_root} (found {available}); "
            f"run 'brainmaps explain {run.path} --methods {','.join(missing)}' first."
        )
    if len(methods) < 2:
        raise ConfigError(
            f"compare needs maps of at least two methods in {run.layout.maps_root}, found "
            f"{available}; run 'brainmaps explain' with more --methods."
        )
    means = {m: class_mean_maps(run, m) for m in methods}
    mask = run_brain_mask(run)
    names = [n for n in means[methods[0]] if all(n in means[m] for m in methods)]
    tables = []
    combined = run.task.combined_map()
    for name in sorted(names, key=lambda n: n != combined):
        table = overlap_matrix(
            {m: means[m][name] for m in methods}, mask, threshold, absolute=absolute
        )
        table.insert(0, "map", name)
        table.insert(3, "threshold", str(threshold))
        tables.append(table)
    out = run.layout.analysis("overlap")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, sep="\t", index=False)
    return out


def pair_matrix(overlap: pd.DataFrame, map_name: str, value: str = "dice") -> pd.DataFrame:
    """The symmetric method x method matrix of one map from ``overlap.tsv`` rows.

    Parameters
    ----------
    overlap : pandas.DataFrame
        Rows ``map, method_a, method_b, <value>`` (one per unordered pair; a == b rows are
        allowed but not needed).
    map_name : str
        Which map (``"conjoined"``, a class name).
    value : str
        The column to put in the matrix.

    Returns
    -------
    pandas.DataFrame
        Square, symmetric, methods in order of appearance, 1 on the diagonal, NaN for
        pairs that are not in the table.
    """
    rows = overlap[overlap["map"].astype(str) == map_name]
    methods = list(dict.fromkeys([*rows["method_a"].astype(str), *rows["method_b"].astype(str)]))
    index = {m: i for i, m in enumerate(methods)}
    values = np.full((len(methods), len(methods)), np.nan)
    for a, b, v in zip(rows["method_a"], rows["method_b"], rows[value], strict=True):
        i, j = index[str(a)], index[str(b)]
        values[i, j] = values[j, i] = float(v)
    np.fill_diagonal(values, 1.0)
    return pd.DataFrame(values, index=methods, columns=methods)
