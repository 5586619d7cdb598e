"""Atlas-region ranking of attribution maps (Kan et al. 2020, Table 2) and hemisphere checks.

For each atlas region: the fraction of its voxels inside the binarised map and the mean
map value inside it, each normalised to sum to 1 over the regions, then ranked. Map and
atlas meet through their affines, never by array shape (the papers' code resized maps
onto the atlas array), and every region named Left/Right is checked against the sign of
its centroid's x coordinate (the papers' tables swapped left and right).

Where the regions are counted: on the finer of the two grids by default. Attribution maps
live on coarse model grids (3-8 mm) while atlases are 1-2 mm; resampling the atlas onto
the coarse grid drops small regions and snaps the others to a few voxels, so the region
fractions are measured on the atlas grid instead: the binarised map is brought there by
nearest neighbour and the values by trilinear interpolation. ``grid="map"`` does the
opposite (the atlas labels come onto the map's grid by nearest neighbour).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmaps.analysis.atlas import (
    Atlas,
    atlas_on_grid,
    region_centroids,
    resample_nearest,
)
from brainmaps.analysis.builtin_atlases import get_atlas
from brainmaps.analysis.maps import (
    as_img,
    class_mean_maps,
    list_map_methods,
    on_grid_of,
    run_brain_mask,
)
from brainmaps.analysis.overlap import binarize
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.utils import atomic_path

__all__ = [
    "REGION_COLUMNS",
    "check_hemispheres",
    "format_top_regions",
    "rank_regions",
    "rank_run_regions",
]

#: Columns of ``<run>/analysis/regions_<atlas>.tsv``.
REGION_COLUMNS = (
    "method",
    "map",
    "rank",
    "label",
    "name",
    "hemisphere",
    "hemisphere_ok",
    "fraction",
    "fraction_norm",
    "mean_value",
    "mean_norm",
    "n_voxels",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "threshold",
)
#: Centroids closer than this to x = 0 (mm) are called "midline".
MIDLINE_MM = 2.0
_VALUES = ("positive", "absolute", "signed")
_GRIDS = ("finer", "atlas", "map")


def check_hemispheres(atlas: Atlas, warn: bool = True) -> pd.DataFrame:
    """Compare each region's stated hemisphere with the sign of its centroid's x.

    Parameters
    ----------
    atlas : Atlas
    warn : bool
        Emit a :class:`~brainmaps.exceptions.BrainmapsWarning` naming the atlas and the
        regions whose side disagrees with their position.

    Returns
    -------
    pandas.DataFrame
        ``label``, ``name``, ``hemisphere`` (from the name or table), ``centroid_x``,
        ``centroid_y``, ``centroid_z`` (world mm, RAS: x < 0 is left), ``n_voxels``,
        ``hemisphere_from_x`` (``"L"`` if x < -2 mm, ``"R"`` if x > 2 mm, else
        ``"midline"``) and ``hemisphere_ok`` (nullable boolean; NA when the name states
        no side).
    """
    table = region_centroids(atlas)
    table.insert(1, "name", atlas.labels["name"].to_numpy())
    table.insert(2, "hemisphere", atlas.labels["hemisphere"].to_numpy())
    x = table["centroid_x"].to_numpy()
    table["hemisphere_from_x"] = np.where(
        x < -MIDLINE_MM, "L", np.where(x > MIDLINE_MM, "R", "midline")
    )
    sided = table["hemisphere"].isin(["L", "R"])
    ok = pd.array([pd.NA] * len(table), dtype="boolean")
    ok[sided.to_numpy()] = (table["hemisphere"] == table["hemisphere_from_x"])[sided].to_numpy()
    table["hemisphere_ok"] = ok
    wrong = table[table["hemisphere_ok"].fillna(True).eq(False)]
    if warn and len(wrong):
        shown = ", ".join(
            f"{r.name} (x = {r.centroid_x:+.1f} mm)" for r in wrong.head(8).itertuples()
        )
        warnings.warn(
            f"atlas {atlas.name!r}: {len(wrong)} regions lie on the other side than their "
            f"name says: {shown}. World x < 0 is left (RAS); the labels table or the image "
            "orientation (affine) is probably swapped: fix it before reading its rankings.",
            BrainmapsWarning,
            stacklevel=2,
        )
    return table


def _common_grid(
    img: nib.Nifti1Image, selected: np.ndarray, values: np.ndarray, atlas: Atlas, grid: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, selection and values of the voxels inside both fields of view."""
    if grid == "finer":
        vox = abs(np.linalg.det(img.affine[:3, :3]))
        grid = "atlas" if abs(np.linalg.det(atlas.img.affine[:3, :3])) < vox else "map"
    if grid == "map":
        labels = atlas_on_grid(atlas, img)
        return labels.ravel(), selected.ravel(), values.ravel()
    # 0 outside the map's field of view, 1 inside, 2 selected: one nearest resampling.
    ref = atlas.img.affine
    code = resample_nearest(selected.astype(np.uint8) + 1, img.affine, atlas.data.shape, ref)
    code = code.ravel()
    vals = on_grid_of(nib.Nifti1Image(values, img.affine), atlas.img, "linear").ravel()
    inside = code > 0
    return atlas.data.ravel()[inside], code[inside] == 2, vals[inside]


def _normalise(values: np.ndarray) -> np.ndarray:
    total = np.abs(values).sum()
    return values / total if total > 0 else np.zeros_like(values)


def rank_regions(
    img: nib.Nifti1Image | str | os.PathLike,
    atlas: Atlas | str | os.PathLike,
    mask_img: nib.Nifti1Image | str | os.PathLike | np.ndarray | None = None,
    threshold: str | float = "top10%",
    *,
    method: str | None = None,
    values: str = "positive",
    grid: str = "finer",
    check: bool = True,
) -> pd.DataFrame:
    """Rank the atlas regions a map points at (Kan et al. 2020, Table 2).

    The map is binarised inside ``mask_img`` (:func:`brainmaps.analysis.overlap.binarize`).
    Per region: ``fraction`` = share of its voxels inside the binarised map, and
    ``mean_value`` = mean map value over its voxels; ``fraction_norm`` and ``mean_norm``
    divide each by its sum over regions. Regions are ranked by ``fraction_norm``, ties by
    ``mean_norm``. Only region voxels inside the map's field of view count.

    Parameters
    ----------
    img : nibabel.Nifti1Image or path
        A 3D attribution map on any grid.
    atlas : Atlas, str or os.PathLike
        An :class:`~brainmaps.analysis.atlas.Atlas`, a built-in name or a label image.
    mask_img : image, path or bool array, optional
        Brain mask for the binarisation (default: every voxel of the map).
    threshold : str or float
        ``"top10%"`` (default), ``"pNN"``, an absolute value, or ``"paper"`` with
        ``method``; see :func:`~brainmaps.analysis.overlap.binarize`.
    method : str, optional
        Attribution method, needed by ``threshold="paper"``.
    values : {"positive", "absolute", "signed"}
        How signed maps count. ``"positive"`` (default): only positive evidence for the
        class: the binarisation ranks signed values and the means use the positive part
        (negative values count as 0). ``"absolute"``: magnitudes, whatever the sign.
        ``"signed"``: raw means (``mean_norm`` divides by the sum of absolute means).
    grid : {"finer", "atlas", "map"}
        Where voxels are counted (see the module notes); default the finer grid.
    check : bool
        Warn about regions whose name contradicts their centroid
        (:func:`check_hemispheres`).

    Returns
    -------
    pandas.DataFrame
        One row per region with voxels in the map's field of view, sorted by ``rank``:
        ``rank``, ``label``, ``name``, ``hemisphere``, ``n_voxels``, ``fraction``,
        ``fraction_norm``, ``mean_value``, ``mean_norm``, ``centroid_x/y/z`` (world mm),
        ``hemisphere_from_x``, ``hemisphere_ok``.
    """
    if values not in _VALUES:
        raise ConfigError(f"values must be one of {_VALUES}, got {values!r}.")
    if grid not in _GRIDS:
        raise ConfigError(f"grid must be one of {_GRIDS}, got {grid!r}.")
    atlas = get_atlas(atlas)
    regions = check_hemispheres(atlas, warn=check)
    return _rank(as_img(img), atlas, regions, mask_img, threshold, method, values, grid)


def _rank(img, atlas, regions, mask_img, threshold, method, values, grid) -> pd.DataFrame:
    selected = binarize(img, mask_img, threshold, method=method, absolute=values == "absolute")
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    data = np.abs(data) if values == "absolute" else data
    data = np.clip(data, 0, None) if values == "positive" else data
    labels, sel, vals = _common_grid(img, selected, data, atlas, grid)
    index = regions["label"].to_numpy()
    size = max(int(labels.max(initial=0)), int(index.max(initial=0))) + 1
    count = np.bincount(labels, minlength=size)[index]
    hits = np.bincount(labels, weights=sel.astype(np.float64), minlength=size)[index]
    total = np.bincount(labels, weights=vals.astype(np.float64), minlength=size)[index]
    keep = count > 0
    table = regions.drop(columns="n_voxels").loc[keep].reset_index(drop=True)
    table["n_voxels"] = count[keep]
    table["fraction"] = hits[keep] / count[keep]
    table["mean_value"] = total[keep] / count[keep]
    table["fraction_norm"] = _normalise(table["fraction"].to_numpy())
    table["mean_norm"] = _normalise(table["mean_value"].to_numpy())
    table = table.sort_values(
        ["fraction_norm", "mean_norm", "label"], ascending=[False, False, True]
    )
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    order = ["rank", "label", "name", "hemisphere", "n_voxels", "fraction", "fraction_norm"]
    order += ["mean_value", "mean_norm", "centroid_x", "centroid_y", "centroid_z"]
    return table[[*order, "hemisphere_from_x", "hemisphere_ok"]].reset_index(drop=True)


def _pick_maps(run: RunFolder, method: str, maps: Sequence[str] | None) -> dict:
    found = class_mean_maps(run, method)
    combined = run.task.combined_map()
    names = list(maps) if maps else sorted(found, key=lambda n: n != combined)
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(
            f"maps {missing} not found for method {method!r} in {run.layout.maps_dir(method)} "
            f"(found {sorted(found)}); pass maps from those."
        )
    return {n: found[n] for n in names}


def rank_run_regions(
    run_dir: str | os.PathLike | RunFolder,
    atlas: Atlas | str | os.PathLike | None = None,
    labels: str | os.PathLike | Mapping | pd.DataFrame | None = None,
    methods: Sequence[str] | None = None,
    maps: Sequence[str] | None = None,
    threshold: str | float = "top10%",
    top: int | None = None,
    *,
    values: str = "positive",
    grid: str = "finer",
) -> Path:
    """Rank an atlas's regions for every class-mean map of a run; write a table.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder with ``maps/<method>/mean_*.nii.gz`` (``brainmaps explain``).
    atlas : Atlas, str, os.PathLike or None
        Built-in name or label image (default: the built-in ``"aal"``, AAL2).
    labels : optional
        Region table of a label image (see :func:`~brainmaps.analysis.atlas.read_labels`).
    methods : sequence of str, optional
        Default: every method with maps.
    maps : sequence of str, optional
        Class-mean maps to rank (default ``"conjoined"`` then each class).
    threshold : str or float
        See :func:`rank_regions`; the run's MNI brain mask is the binarisation mask.
    top : int, optional
        Keep only the ``top`` best regions per method and map (default: all).
    values, grid : str
        See :func:`rank_regions`.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/regions_<atlas.name>.tsv`` with :data:`REGION_COLUMNS`, grouped
        by method then map and sorted by rank.
    """
    run = open_run(run_dir)
    available = list_map_methods(run)
    methods = list(methods) if methods else available
    missing = sorted(set(methods) - set(available))
    if missing or not methods:
        raise ConfigError(
            f"methods {missing or methods} have no maps in {run.layout.maps_root} (found "
            f"{available}); run 'brainmaps explain {run.path}' first."
        )
    if values not in _VALUES or grid not in _GRIDS:
        raise ConfigError(f"values must be in {_VALUES} and grid in {_GRIDS}.")
    atlas = get_atlas(atlas, labels)
    regions = check_hemispheres(atlas)
    mask = run_brain_mask(run)
    tables = []
    for method in methods:
        for name, img in _pick_maps(run, method, maps).items():
            table = _rank(img, atlas, regions, mask, threshold, method, values, grid)
            table = table.head(top) if top else table
            tables.append(table.assign(method=method, map=name, threshold=str(threshold)))
    out = run.layout.analysis(f"regions_{atlas.name}")
    with atomic_path(out) as tmp:
        pd.concat(tables)[list(REGION_COLUMNS)].to_csv(tmp, sep="\t", index=False)
    return out


def format_top_regions(table: pd.DataFrame, top: int = 10) -> str:
    """A small text table of the best-ranked regions (``rank``, ``name``, fractions).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`rank_regions`, or the rows of one method and map of a
        ``regions_<atlas>.tsv``.
    top : int
        Number of rows.

    Returns
    -------
    str
    """
    cols = ["rank", "name", "hemisphere", "fraction", "fraction_norm", "mean_norm"]
    shown = table.sort_values("rank").head(top)[cols].copy()
    shown["hemisphere"] = shown["hemisphere"].fillna("")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")
