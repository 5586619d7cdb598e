"""Relevance against anatomy: does a subject's map weigh a region more when it is larger?

Hofmann et al. (2022) found the relevance of their brain-age models concentrated around
the ventricles, and a follow-up reported r = 0.69 between the relevance inside the
ventricles and their volume: the model reads enlarged ventricles as age. This module
measures that per subject and per atlas region:

* **relevance of a region** (:func:`region_relevance`): the map's mass inside the region,
  counted on the atlas's own grid (each map voxel shares its value among the atlas voxels
  it covers, so small regions are not lost on a coarse 4-8 mm model grid), as a share of
  the subject's total (``"fraction"``, default), as the mass itself (``"sum"``) or as the
  mean over the region (``"mean"``); positive values by default, as the region ranking;
* **volume of a region**: a column of a table (``brainmaps morphometry``, DLMUSE,
  FreeSurfer), or measured on the run's own preprocessed volumes by
  :func:`brainmaps.baselines.morphometry.morphometry_table` (tissue voxels above the Otsu
  threshold: for a CSF space such as a ventricle this *falls* as the space enlarges);
* **correlation** across subjects (:func:`anatomy_table`): Pearson r and Spearman rho with
  their p-values, the partial correlation with the run's numeric target held fixed (both
  relevance and volume change with age, so the raw r alone can be age twice over), and
  Benjamini-Hochberg q-values over the pairs of one method and group.

A *pair* names atlas regions and volume columns summed on each side, e.g.
``ventricles=Left_Lateral_Ventricle+Right_Lateral_Ventricle:MUSE_51+MUSE_52``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse, stats

from brainmaps.analysis.atlas import Atlas, atlas_on_grid
from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "ANATOMY_COLUMNS",
    "STATISTICS",
    "VALUES",
    "Pair",
    "RegionWeights",
    "anatomy_table",
    "parse_pairs",
    "partial_correlation",
    "region_relevance",
    "ventricle_pair",
    "volume_pairs",
]

#: How a region's relevance is summarised (see :func:`region_relevance`).
STATISTICS = ("fraction", "sum", "mean")
#: Which part of a signed map counts.
VALUES = ("positive", "absolute", "signed")
#: Columns of ``analysis/anatomy_<method>_<atlas>.tsv``.
ANATOMY_COLUMNS = (
    "method",
    "group",
    "pair",
    "regions",
    "volumes",
    "n",
    "r",
    "p_value",
    "rho",
    "p_spearman",
    "r_partial",
    "p_partial",
    "q_value",
    "relevance_mean",
    "volume_mean",
)
_MIN_SUBJECTS = 5


@dataclass(frozen=True)
class Pair:
    """Atlas regions and volume columns compared with each other (each side summed).

    Parameters
    ----------
    name : str
        Name of the pair in the tables (``ventricles``).
    regions : tuple of str
        Atlas region names (as in the atlas table).
    volumes : tuple of str
        Columns of the volume table.
    """

    name: str
    regions: tuple[str, ...]
    volumes: tuple[str, ...]


def parse_pairs(specs: Sequence[str] | str | None) -> list[Pair]:
    """Parse ``NAME=REGION[+REGION...]:COLUMN[+COLUMN...]`` pair specifications.

    Parameters
    ----------
    specs : str or sequence of str, optional
        One specification per pair (a string may hold several separated by ``;``).

    Returns
    -------
    list of Pair

    Raises
    ------
    ConfigError
        For a specification without ``=`` and ``:``, an empty side or a repeated name.
    """
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [s for s in specs.split(";") if s.strip()]
    pairs, seen = [], set()
    for spec in specs:
        match = re.fullmatch(r"\s*([^=:+]+?)\s*=\s*([^:]+):(.+)", str(spec))
        if match is None:
            raise ConfigError(
                f"--pair {spec!r}: expected NAME=REGION[+REGION...]:COLUMN[+COLUMN...], e.g. "
                "ventricles=Left_Lateral_Ventricle+Right_Lateral_Ventricle:MUSE_51+MUSE_52."
            )
        name, regions, volumes = match.groups()
        regions = tuple(r.strip() for r in regions.split("+") if r.strip())
        volumes = tuple(v.strip() for v in volumes.split("+") if v.strip())
        if not regions or not volumes:
            raise ConfigError(f"--pair {spec!r}: name at least one region and one column.")
        if name in seen:
            raise ConfigError(f"--pair: the name {name!r} is given twice; name each pair once.")
        seen.add(name)
        pairs.append(Pair(name, regions, volumes))
    return pairs


def ventricle_pair(atlas: Atlas, volume_columns: Sequence[str]) -> Pair | None:
    """The ventricle check: every atlas region and every volume column naming a ventricle.

    Region names and columns are matched on ``ventric`` (case-insensitive); the columns
    of ``brainmaps morphometry`` (``<region>_volume``) qualify, DLMUSE's numbered
    ``MUSE_<n>`` do not (pass ``--pair`` for those). ``None`` when either side is empty.
    """
    regions = [str(n) for n in atlas.labels["name"] if "ventric" in str(n).lower()]
    columns = [
        str(c) for c in volume_columns if "ventric" in str(c).lower() and str(c).endswith("volume")
    ]
    if not columns:
        columns = [str(c) for c in volume_columns if "ventric" in str(c).lower()]
    if not regions or not columns:
        return None
    return Pair("ventricles", tuple(regions), tuple(columns))


class RegionWeights:
    """How much of each atlas region each voxel of one map grid covers.

    ``matrix[v, r]`` is the share of map voxel ``v``'s volume that lies in region ``r``,
    counted on the atlas grid when the atlas is finer than the map (each atlas voxel is
    assigned to the map voxel containing its centre) and by nearest neighbour on the
    map grid otherwise.

    Parameters
    ----------
    atlas : Atlas
    shape : tuple of int
        Shape of the map grid.
    affine : numpy.ndarray
        Its voxel-to-world matrix.
    """

    def __init__(self, atlas: Atlas, shape: tuple[int, ...], affine: np.ndarray) -> None:
        self.names = [str(n) for n in atlas.labels["name"]]
        index = atlas.labels["index"].to_numpy(dtype=np.int64)
        lut = np.full(max(int(atlas.data.max(initial=0)), int(index.max(initial=0))) + 1, -1)
        lut[index] = np.arange(len(index))
        shape = tuple(int(s) for s in shape[:3])
        n_vox = int(np.prod(shape))
        atlas_volume = abs(np.linalg.det(atlas.img.affine[:3, :3]))
        map_volume = abs(np.linalg.det(np.asarray(affine, float)[:3, :3]))
        if atlas_volume <= map_volume:
            fg = np.flatnonzero(atlas.data.ravel())
            column = lut[atlas.data.ravel()[fg]]
            ijk = np.stack(np.unravel_index(fg, atlas.data.shape), axis=1).astype(np.float64)
            world = ijk @ atlas.img.affine[:3, :3].T + atlas.img.affine[:3, 3]
            to_map = np.linalg.inv(np.asarray(affine, float))
            vox = np.rint(world @ to_map[:3, :3].T + to_map[:3, 3]).astype(np.int64)
            inside = np.all((vox >= 0) & (vox < np.array(shape)), axis=1) & (column >= 0)
            row = np.ravel_multi_index(tuple(vox[inside].T), shape)
            share = np.full(int(inside.sum()), atlas_volume / map_volume)
            column = column[inside]
        else:
            labels = atlas_on_grid(atlas, nib.Nifti1Image(np.zeros(shape, np.uint8), affine))
            row = np.flatnonzero(labels.ravel())
            column = lut[labels.ravel()[row]]
            keep = column >= 0
            row, column = row[keep], column[keep]
            share = np.ones(len(row))
        self.matrix = sparse.csr_matrix(
            (share, (row, column)), shape=(n_vox, len(self.names))
        ).tocsc()
        #: Region volume inside the map's field of view, in map voxels.
        self.size = np.asarray(self.matrix.sum(axis=0)).ravel()


def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


def region_relevance(
    maps: Sequence[np.ndarray | nib.Nifti1Image | str | os.PathLike],
    atlas: Atlas,
    *,
    mask: np.ndarray | None = None,
    statistic: str = "fraction",
    values: str = "absolute",
    affine: np.ndarray | None = None,
) -> pd.DataFrame:
    """Relevance of every atlas region in each map.

    Parameters
    ----------
    maps : sequence of images, paths or arrays
        Subject maps; arrays need ``affine``. Maps on different grids (native-space maps)
        are each counted on their own grid.
    atlas : Atlas
    mask : numpy.ndarray of bool, optional
        Voxels that count (e.g. the brain; default every voxel), on the maps' grid.
    statistic : {"fraction", "sum", "mean"}
        ``"sum"``: the map's mass in the region (each voxel's value times the share of
        it in the region); ``"fraction"``: that mass over the map's total mass (a share,
        comparable across subjects whose maps differ in scale); ``"mean"``: the mass over
        the region's volume in map voxels.
    values : {"absolute", "positive", "signed"}
        Which part of the map counts (default the magnitude, see the module notes).
    affine : numpy.ndarray, optional
        Voxel-to-world matrix of array maps.

    Returns
    -------
    pandas.DataFrame
        One row per map, one column per atlas region (in the atlas's order); NaN for a
        region outside the map's field of view, and for every region of a map whose
        total is 0 with ``statistic="fraction"``.
    """
    _check_choice("statistic", statistic, STATISTICS)
    _check_choice("values", values, VALUES)
    weights: dict[tuple, RegionWeights] = {}
    rows = []
    for i, item in enumerate(maps):
        data, grid_affine = _map_data(item, affine, i)
        if values == "absolute":
            data = np.abs(data)
        elif values == "positive":
            data = np.clip(data, 0.0, None)
        if mask is not None:
            if mask.shape != data.shape:
                raise ShapeError(
                    f"mask of shape {mask.shape} for map {i} of shape {data.shape}; give the "
                    "mask on the maps' grid or none."
                )
            data = np.where(mask, data, 0.0)
        key = (data.shape, tuple(np.round(grid_affine, 6).ravel()))
        if key not in weights:
            weights[key] = RegionWeights(atlas, data.shape, grid_affine)
        w = weights[key]
        mass = w.matrix.T @ data.ravel()
        mass = np.where(w.size > 0, mass, np.nan)
        if statistic == "mean":
            mass = mass / np.where(w.size > 0, w.size, np.nan)
        elif statistic == "fraction":
            total = float(data.sum())
            mass = mass / total if total != 0 else np.full_like(mass, np.nan)
        rows.append(mass)
    names = next(iter(weights.values())).names if weights else list(atlas.labels["name"])
    return pd.DataFrame(np.array(rows).reshape(len(rows), len(names)), columns=names)


def _map_data(item, affine, i: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(item, np.ndarray):
        if affine is None:
            raise ConfigError(f"map {i} is an array: pass affine=... (its voxel-to-world matrix).")
        return np.nan_to_num(item.astype(np.float64)), np.asarray(affine, float)
    img = nib.load(item) if isinstance(item, str | os.PathLike) else item
    if len(img.shape) != 3:
        raise ShapeError(f"map {getattr(img, 'get_filename', lambda: i)()} is not 3D: {img.shape}.")
    return np.nan_to_num(np.asarray(img.dataobj, dtype=np.float64)), img.affine


def partial_correlation(
    x: np.ndarray, y: np.ndarray, covariates: np.ndarray
) -> tuple[float, float]:
    """Pearson correlation of ``x`` and ``y`` after regressing ``covariates`` out of both.

    Parameters
    ----------
    x, y : numpy.ndarray
        One value per subject.
    covariates : numpy.ndarray
        (n,) or (n, k): held fixed (an intercept is added).

    Returns
    -------
    (float, float)
        r and its two-sided p-value with ``n - 2 - k`` degrees of freedom; NaN when fewer
        than ``k + 4`` subjects remain or a residual is constant.
    """
    z = np.asarray(covariates, float).reshape(len(x), -1)
    design = np.column_stack([np.ones(len(x)), z])
    k = z.shape[1]
    if len(x) < k + 4:
        return np.nan, np.nan
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    if np.std(rx) == 0 or np.std(ry) == 0:
        return np.nan, np.nan
    r = float(np.clip(np.corrcoef(rx, ry)[0, 1], -1.0, 1.0))
    dof = len(x) - 2 - k
    t = r * np.sqrt(dof / max(1e-300, 1.0 - r * r))
    return r, float(2.0 * stats.t.sf(abs(t), dof))


def _correlate(relevance: np.ndarray, volume: np.ndarray, covariate: np.ndarray | None) -> dict:
    ok = np.isfinite(relevance) & np.isfinite(volume)
    if covariate is not None:
        ok &= np.isfinite(covariate)
    row = {"n": int(ok.sum()), "relevance_mean": np.nan, "volume_mean": np.nan}
    row.update(r=np.nan, p_value=np.nan, rho=np.nan, p_spearman=np.nan)
    row.update(r_partial=np.nan, p_partial=np.nan)
    if ok.sum() < _MIN_SUBJECTS:
        return row
    a, b = relevance[ok], volume[ok]
    row["relevance_mean"], row["volume_mean"] = float(a.mean()), float(b.mean())
    if np.std(a) == 0 or np.std(b) == 0:
        return row
    row["r"], row["p_value"] = (float(v) for v in stats.pearsonr(a, b))
    row["rho"], row["p_spearman"] = (float(v) for v in stats.spearmanr(a, b))
    if covariate is not None:
        row["r_partial"], row["p_partial"] = partial_correlation(a, b, covariate[ok])
    return row


def _pair_values(pair: Pair, relevance: pd.DataFrame, volumes: pd.DataFrame):
    missing = [r for r in pair.regions if r not in relevance]
    if missing:
        close = [n for n in relevance.columns if any(m.lower() in n.lower() for m in missing)]
        raise ConfigError(
            f"pair {pair.name!r}: atlas regions {missing} not in the atlas"
            + (f" (did you mean {close[:5]}?)" if close else "")
            + "; use the names of the atlas table."
        )
    absent = [c for c in pair.volumes if c not in volumes]
    if absent:
        raise ConfigError(
            f"pair {pair.name!r}: volume columns {absent} not in the volume table (its "
            f"columns include {list(volumes.columns[:8])}); name columns of the table."
        )
    rel = relevance[list(pair.regions)].to_numpy(float).sum(axis=1)
    vol = volumes[list(pair.volumes)].to_numpy(float).sum(axis=1)
    return rel, vol


def anatomy_table(
    relevance: pd.DataFrame,
    volumes: pd.DataFrame,
    pairs: Sequence[Pair],
    *,
    groups: Mapping[str, np.ndarray] | None = None,
    covariate: np.ndarray | None = None,
    method: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Correlate each pair's relevance with its volume across subjects, per group.

    Parameters
    ----------
    relevance : pandas.DataFrame
        :func:`region_relevance` of the subjects (one row each).
    volumes : pandas.DataFrame
        The same subjects' volumes (rows in the same order).
    pairs : sequence of Pair
    groups : mapping of str to bool array, optional
        Subsets of the rows (default ``{"all": every row}``), e.g. the age groups of
        :meth:`brainmaps.tasks.Regression.map_groups`.
    covariate : numpy.ndarray, optional
        Held fixed in ``r_partial`` (the run's numeric target, e.g. age).
    method : str
        Written in the ``method`` column.

    Returns
    -------
    (pandas.DataFrame, pandas.DataFrame)
        The correlations (columns :data:`ANATOMY_COLUMNS`; ``q_value`` are
        Benjamini-Hochberg q-values of ``p_value`` over the pairs of each group), and the
        per-subject values (``relevance_<pair>``, ``volume_<pair>``).

    Raises
    ------
    ShapeError
        If the tables have different numbers of rows.
    ConfigError
        If no pair is given, or a pair names a region or column the tables lack.
    """
    from brainmaps.evaluation.statistics import benjamini_hochberg

    if len(relevance) != len(volumes):
        raise ShapeError(
            f"{len(relevance)} maps but {len(volumes)} rows of volumes; give one row each."
        )
    if not pairs:
        raise ConfigError(
            "no region/volume pair to correlate: pass pairs (--pair NAME=REGIONS:COLUMNS) or "
            "volumes whose columns are <region>_volume of the atlas regions."
        )
    groups = dict(groups) if groups else {"all": np.ones(len(relevance), bool)}
    covariate = None if covariate is None else np.asarray(covariate, float)
    values = {p.name: _pair_values(p, relevance, volumes) for p in pairs}
    rows = []
    for group, keep in groups.items():
        keep = np.asarray(keep, bool)
        block = []
        for p in pairs:
            rel, vol = values[p.name]
            cov = None if covariate is None else covariate[keep]
            entry = {"method": method, "group": group, "pair": p.name}
            entry.update(regions="+".join(p.regions), volumes="+".join(p.volumes))
            block.append(entry | _correlate(rel[keep], vol[keep], cov))
        p_values = np.array([b["p_value"] for b in block], float)
        q = np.full(len(block), np.nan)
        ok = np.isfinite(p_values)
        if ok.any():
            q[ok] = benjamini_hochberg(p_values[ok])
        for b, qv in zip(block, q, strict=True):
            b["q_value"] = float(qv)
        rows += block
    table = pd.DataFrame(rows).reindex(columns=list(ANATOMY_COLUMNS))
    subjects = pd.DataFrame(
        {f"relevance_{name}": rel for name, (rel, _) in values.items()}
        | {f"volume_{name}": vol for name, (_, vol) in values.items()}
    )
    return table, subjects


def volume_pairs(atlas: Atlas, columns: Sequence[str]) -> list[Pair]:
    """One pair per atlas region that has a ``<region>_volume`` column (morphometry)."""
    have = set(map(str, columns))
    return [
        Pair(str(n), (str(n),), (f"{n}_volume",))
        for n in atlas.labels["name"]
        if f"{n}_volume" in have
    ]
