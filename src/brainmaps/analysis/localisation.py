"""Localisation of maps against a known ground truth (synthetic cohorts).

Three scores of how well a map points at the planted effect, each with its chance level:

- **ROC AUC** of the map's values as a voxel classifier of "inside the planted mask",
  over brain voxels (0.5 = chance, 1 = every planted voxel above every other).
- **Relevance mass** (Arras et al. 2022, *CLEVR-XAI*): the share of the map's total
  (absolute) relevance that falls inside the planted mask. A uniform map scores the
  mask's share of brain voxels (``mass_baseline``).
- **Pointing game** (Zhang et al. 2018, *Top-down neural attention by excitation
  backprop*): whether the map's maximum lies inside the planted mask, dilated by a
  tolerance; over subjects, the hit rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainmaps.analysis.maps import (
    as_img,
    class_mean_maps,
    ground_truth_mask,
    list_map_methods,
    on_grid_of,
    run_brain_mask,
)
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.utils import atomic_path

__all__ = ["localisation_roc", "localisation_run", "localisation_scores", "pointing_game"]

ImgLike = nib.Nifti1Image | str | os.PathLike
COLUMNS = [
    "method",
    "map",
    "roc_auc",
    "relevance_mass",
    "mass_baseline",
    "pointing_game",
    "n_subjects",
]


def _prepare(
    img: ImgLike, truth_img: ImgLike, mask_img: ImgLike | None, absolute: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, truth and brain mask on the map's grid (truth and mask: nearest)."""
    img = as_img(img)
    values = np.asarray(img.dataobj, dtype=np.float64)
    values = np.abs(values) if absolute else values
    truth = on_grid_of(as_img(truth_img, "truth_img"), img, interpolation="nearest") > 0.5
    if mask_img is None:
        brain = np.ones(values.shape, dtype=bool)
    else:
        brain = on_grid_of(as_img(mask_img, "mask_img"), img, interpolation="nearest") > 0.5
    inside = truth & brain
    if not inside.any() or inside.sum() == brain.sum():
        raise ConfigError(
            "truth_img: the planted mask covers none or all of the brain on the map's grid "
            f"({int(inside.sum())} of {int(brain.sum())} voxels); check the two affines."
        )
    return values, truth, brain


def pointing_game(
    img: ImgLike,
    truth_img: ImgLike,
    mask_img: ImgLike | None = None,
    *,
    tolerance_mm=0.0,
    absolute: bool = True,
) -> bool:
    """Whether the map's maximum (inside the mask) falls in the dilated planted mask.

    Parameters
    ----------
    img, truth_img : nibabel.Nifti1Image or path
        The map, and the planted mask (resampled to the map's grid, nearest neighbour).
    mask_img : nibabel.Nifti1Image or path, optional
        Where the maximum is searched (the brain).
    tolerance_mm : float
        The planted mask is dilated by this many millimetres (Zhang et al. used 15
        pixels in 2D images).
    absolute : bool
        Take the maximum of the absolute values (default), so a strongly negative voxel
        can be the one pointed at; ``False``: of the signed values.

    Returns
    -------
    bool
    """
    values, truth, brain = _prepare(img, truth_img, mask_img, absolute=absolute)
    if tolerance_mm > 0:
        zooms = np.sqrt((as_img(img).affine[:3, :3] ** 2).sum(axis=0))
        radius = np.ceil(tolerance_mm / zooms).astype(int)
        grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = sum((g * z) ** 2 for g, z in zip(grids, zooms, strict=True)) <= tolerance_mm**2
        truth = ndimage.binary_dilation(truth, structure=ball)
    search = np.where(brain, values, -np.inf)
    return bool(truth.flat[int(np.argmax(search))])


def localisation_scores(
    img: ImgLike,
    truth_img: ImgLike,
    mask_img: ImgLike | None = None,
    *,
    absolute: bool = True,
    tolerance_mm: float = 0.0,
) -> dict[str, float]:
    """ROC AUC, relevance mass and pointing game of one map against a planted mask.

    Parameters
    ----------
    img : nibabel.Nifti1Image or path
        The map.
    truth_img : nibabel.Nifti1Image or path
        The planted mask (non-zero inside), on any grid: resampled to the map's grid
        through the affines (nearest neighbour).
    mask_img : nibabel.Nifti1Image or path, optional
        Brain mask; voxels outside are ignored.
    absolute : bool
        Score absolute values (default), so a strongly negative region counts as found.
    tolerance_mm : float
        Pointing-game tolerance (see :func:`pointing_game`).

    Returns
    -------
    dict
        ``roc_auc``, ``relevance_mass``, ``mass_baseline``, ``pointing_game`` (0 or 1).
    """
    from sklearn.metrics import roc_auc_score  # scikit-learn loads on use, not on import

    values, truth, brain = _prepare(img, truth_img, mask_img, absolute)
    v, t = values[brain], truth[brain]
    positive = np.clip(v, 0, None)
    total = positive.sum()
    return {
        "roc_auc": float(roc_auc_score(t, v)) if np.ptp(v) > 0 else 0.5,
        "relevance_mass": float(positive[t].sum() / total) if total > 0 else float("nan"),
        "mass_baseline": float(t.mean()),
        "pointing_game": float(
            pointing_game(img, truth_img, mask_img, tolerance_mm=tolerance_mm, absolute=absolute)
        ),
    }


def localisation_roc(
    img: ImgLike,
    truth_img: ImgLike,
    mask_img: ImgLike | None = None,
    *,
    absolute: bool = True,
    n_points: int = 101,
) -> pd.DataFrame:
    """The voxel-wise ROC curve of a map against a planted mask, on ``n_points`` FPRs.

    Parameters
    ----------
    img, truth_img, mask_img, absolute
        As in :func:`localisation_scores`.
    n_points : int
        The curve is interpolated on this many evenly spaced false-positive rates.

    Returns
    -------
    pandas.DataFrame
        Columns ``fpr``, ``tpr``.
    """
    from sklearn.metrics import roc_curve  # scikit-learn loads on use, not on import

    values, truth, brain = _prepare(img, truth_img, mask_img, absolute)
    fpr, tpr, _ = roc_curve(truth[brain], values[brain])
    grid = np.linspace(0.0, 1.0, n_points)
    return pd.DataFrame({"fpr": grid, "tpr": np.interp(grid, fpr, tpr)})


def _subject_scores(run: RunFolder, method: str, truth, mask, absolute, tolerance_mm):
    folder = run.layout.maps_dir(method)
    manifest = pd.read_csv(
        run.layout.maps_manifest(method), sep="\t", dtype=str, keep_default_na=False
    )
    scores = [
        localisation_scores(folder / f, truth, mask, absolute=absolute, tolerance_mm=tolerance_mm)
        for f in manifest["file"]
    ]
    mean = pd.DataFrame(scores).mean().to_dict()
    return {"method": method, "map": "subjects", **mean, "n_subjects": len(scores)}


def localisation_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    truth_img: ImgLike | None = None,
    absolute: bool = True,
    tolerance_mm: float = 0.0,
    subjects: bool = True,
) -> Path:
    """Score every method's maps of a run against the planted mask; write tables.

    Rows per method: each class-mean map and ``conjoined`` (``n_subjects`` 0), and with
    ``subjects`` the mean of the per-subject scores (``map`` = ``"subjects"``; the
    pointing game is then a hit rate).

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run with maps.
    methods : sequence of str, optional
        Default: every method with maps.
    truth_img : image or path, optional
        The planted mask; default: ``ground_truth_mask.nii.gz`` of the run's synthetic
        cohort.
    absolute, tolerance_mm
        As in :func:`localisation_scores`.
    subjects : bool
        Also score each subject's map.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/localisation.tsv`` (columns ``method``, ``map``, ``roc_auc``,
        ``relevance_mass``, ``mass_baseline``, ``pointing_game``, ``n_subjects``), with
        ``localisation_roc.tsv`` (``method``, ``fpr``, ``tpr`` of the conjoined maps)
        beside it.

    Raises
    ------
    ConfigError
        If no ground truth is known or no method has maps.
    """
    run = open_run(run_dir)
    truth = as_img(truth_img, "truth_img") if truth_img is not None else ground_truth_mask(run)
    if truth is None:
        raise ConfigError(
            f"run {run.path} was not trained on a synthetic cohort with a ground-truth mask; "
            "pass truth_img (a NIfTI mask of the expected effect) to score localisation."
        )
    methods = list(methods) if methods else list_map_methods(run)
    if not methods:
        raise ConfigError(f"no maps in {run.layout.maps_root}; run 'brainmaps explain' first.")
    mask = run_brain_mask(run)
    # once onto the run grid, so per-subject scoring does not resample it again
    truth = nib.Nifti1Image(on_grid_of(truth, mask, interpolation="nearest"), mask.affine)
    rows, curves = [], []
    for method in methods:
        means = class_mean_maps(run, method)
        for name, img in means.items():
            scores = localisation_scores(
                img, truth, mask, absolute=absolute, tolerance_mm=tolerance_mm
            )
            rows.append({"method": method, "map": name, **scores, "n_subjects": 0})
        combined = run.task.combined_map()
        key = combined if combined in means else next(iter(means))
        curve = localisation_roc(means[key], truth, mask, absolute=absolute)
        curves.append(curve.assign(method=method)[["method", "fpr", "tpr"]])
        if subjects:
            rows.append(_subject_scores(run, method, truth, mask, absolute, tolerance_mm))
    out = run.layout.analysis("localisation")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, sep="\t", index=False)
    with atomic_path(run.layout.analysis("localisation_roc")) as tmp:
        pd.concat(curves, ignore_index=True).to_csv(tmp, sep="\t", index=False)
    return out
