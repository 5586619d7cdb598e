"""Label atlases: loading user atlases and the built-in ones, and bringing them onto a grid.

An :class:`Atlas` is a 3D integer label image (background 0; negative values are
background too) with a table of region names. Its regions are placed in world space by
the image's affine only: :func:`atlas_on_grid` resamples the labels onto another image's
grid through both affines (nearest neighbour), never by array shape. The code of Kan et
al. (2020) resized maps onto the atlas by array shape, which misplaces regions whenever
the two grids differ in field of view, voxel size or orientation.

The built-in atlases are in :mod:`brainmaps.analysis.builtin_atlases`.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainmaps.data.tables import check_label_table, read_label_table
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.validation import check_img

__all__ = [
    "Atlas",
    "atlas_on_grid",
    "load_atlas",
    "parse_hemisphere",
    "read_labels",
    "region_centroids",
    "resample_nearest",
]

_LEFT = {"l", "lh", "left"}
_RIGHT = {"r", "rh", "right"}


@dataclass(frozen=True, eq=False)
class Atlas:
    """A label atlas: an integer label image and the names of its regions.

    Parameters
    ----------
    img : nibabel.Nifti1Image
        3D label image; values <= 0 are background.
    labels : pandas.DataFrame
        One row per region present in ``img``: ``index`` (int), ``name`` (str) and
        ``hemisphere`` (``"L"``, ``"R"`` or ``""`` when the name does not say).
    name : str
        Short identifier, used in file names (``regions_<name>.tsv``).
    """

    img: nib.Nifti1Image
    labels: pd.DataFrame
    name: str

    @functools.cached_property
    def data(self) -> np.ndarray:
        """numpy.ndarray : The labels as ``int32``, background (and negatives) set to 0."""
        data = np.rint(np.asarray(self.img.dataobj, dtype=np.float64)).astype(np.int32)
        data[data < 0] = 0
        return data


def parse_hemisphere(name: str) -> str:
    """The hemisphere a region name states: ``"L"``, ``"R"`` or ``""``.

    Recognises separate tokens ``L``/``Left``/``lh`` and ``R``/``Right``/``rh``
    (``Precentral_L``, ``A8m_R``, ``Left-Hippocampus``, ``ctx-lh-insula``,
    ``G_Frontal_Sup-1-L``) and names starting or ending with ``Left``/``Right``
    (``LeftAmygdala``). A name with both sides or none gives ``""``.

    Parameters
    ----------
    name : str

    Returns
    -------
    str
    """
    text = str(name).strip().lower()
    tokens = {t for t in re.split(r"[\s_\-.,:;/()\[\]]+", text) if t}
    left = bool(tokens & _LEFT) or text.startswith("left") or text.endswith("left")
    right = bool(tokens & _RIGHT) or text.startswith("right") or text.endswith("right")
    if left == right:
        return ""
    return "L" if left else "R"


def _normalise_side(value: object) -> str:
    text = str(value).strip().lower() if pd.notna(value) else ""
    if text in _LEFT:
        return "L"
    if text in _RIGHT:
        return "R"
    return "midline" if text in ("m", "midline", "mid", "b", "both", "bilateral") else ""


def read_labels(labels: str | os.PathLike | Mapping | pd.DataFrame) -> pd.DataFrame:
    """Read a region table: ``index``, ``name`` and ``hemisphere`` columns.

    Parameters
    ----------
    labels : str, os.PathLike, mapping or pandas.DataFrame
        A TSV/CSV (separator read from the content) with an index column (``index``,
        ``label`` or ``value``) and a name column (``name``, ``region``, ``label_name`` or
        ``structure``), header names in any case; an optional ``hemisphere`` column is
        used as given. Or a FreeSurfer lookup table
        (``index name r g b a`` per line, ``#`` comments), a ``{index: name}`` mapping or
        a data frame with ``index`` and ``name`` columns.

    Returns
    -------
    pandas.DataFrame
        Sorted by ``index``; rows with index <= 0 (background) are dropped. Without a
        ``hemisphere`` column the side is parsed from the name (:func:`parse_hemisphere`).

    Raises
    ------
    ConfigError
        If the file is missing, has no index/name columns, or an index is not an
        integer or appears twice.
    """
    source = "labels"
    if isinstance(labels, Mapping):
        table = pd.DataFrame({"index": list(labels), "name": list(labels.values())})
    elif isinstance(labels, pd.DataFrame):
        table = labels.rename(columns={c: str(c).lower() for c in labels.columns})
        if not {"index", "name"} <= set(table.columns):
            raise ConfigError(
                f"labels: the table has columns {list(labels.columns)}; it needs 'index' and "
                "'name'."
            )
    else:
        path = Path(labels).expanduser()
        if not path.is_file():
            raise ConfigError(f"labels: {path} does not exist; pass a TSV/CSV or LUT file.")
        table, source = read_label_table(path), str(path)
    return _clean_labels(table, source)


def _clean_labels(table: pd.DataFrame, source: str) -> pd.DataFrame:
    out = check_label_table(table, source)
    if "hemisphere" in out.columns:
        out["hemisphere"] = [_normalise_side(v) for v in out["hemisphere"]]
    else:
        out["hemisphere"] = [parse_hemisphere(n) for n in out["name"]]
    return out


def _label_image(atlas_img: nib.Nifti1Image | str | os.PathLike) -> tuple[nib.Nifti1Image, str]:
    source = str(atlas_img) if isinstance(atlas_img, str | os.PathLike) else "atlas_img"
    return check_img(atlas_img, name="atlas_img", labels=True), source


def _default_name(source: str) -> str:
    stem = Path(source).name
    for ext in (".nii.gz", ".nii"):
        stem = stem.removesuffix(ext)
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", stem).strip("_") or "atlas"


def _sibling_labels(source: str) -> Path | None:
    path = Path(source)
    stem = _default_name(source)
    for ext in (".tsv", ".csv", ".txt"):
        if (path.parent / f"{stem}{ext}").is_file():
            return path.parent / f"{stem}{ext}"
    return None


def load_atlas(
    atlas_img: nib.Nifti1Image | str | os.PathLike,
    labels: str | os.PathLike | Mapping | pd.DataFrame | None = None,
    name: str | None = None,
) -> Atlas:
    """Load a label atlas and reconcile its image with its region table.

    Parameters
    ----------
    atlas_img : nibabel.Nifti1Image, str or os.PathLike
        3D integer label image (0 and negative values are background).
    labels : str, os.PathLike, mapping or pandas.DataFrame, optional
        Region names (see :func:`read_labels`). Default: a ``.tsv``/``.csv``/``.txt``
        file next to the image with the same stem, else names ``label_<n>``.
    name : str, optional
        Short identifier (default: the file name without extension, or ``"atlas"``).

    Returns
    -------
    Atlas
        Its ``labels`` has one row per label value present in the image.

    Raises
    ------
    ImageError
        If the image is missing, unreadable, not 3D or not integer-valued.
    ConfigError
        If the labels table is malformed (see :func:`read_labels`).

    Warns
    -----
    BrainmapsWarning
        For label values in the image without a name (named ``label_<n>``) and table
        rows whose value is absent from the image (dropped).
    """
    img, source = _label_image(atlas_img)
    if labels is None and source != "atlas_img":
        labels = _sibling_labels(source)
    name = name or _default_name(source)
    table = read_labels(labels) if labels is not None else None
    return _make_atlas(img, table, name, warn=True)


def _make_atlas(img: nib.Nifti1Image, table: pd.DataFrame | None, name: str, warn: bool) -> Atlas:
    atlas = Atlas(img=img, labels=pd.DataFrame(), name=name)
    present = np.unique(atlas.data)
    present = present[present > 0]
    if table is None:
        if warn:
            warnings.warn(
                f"atlas {name!r}: no labels table given; its {len(present)} regions are "
                "named 'label_<n>'. Pass labels= (a TSV/CSV with index,name or a LUT).",
                BrainmapsWarning,
                stacklevel=3,
            )
        table = pd.DataFrame({"index": np.zeros(0, np.int64), "name": [], "hemisphere": []})
    elif not np.isin(table["index"], present).any():
        raise ConfigError(
            f"atlas {name!r}: none of the labels table's indices "
            f"{table['index'].head().tolist()}... occurs in the image (values "
            f"{present[:5].tolist()}...); check that the table belongs to this atlas."
        )
    unnamed = np.setdiff1d(present, table["index"].to_numpy())
    absent = np.setdiff1d(table["index"].to_numpy(), present)
    if warn and len(unnamed) and len(table):
        warnings.warn(
            f"atlas {name!r}: label values {unnamed[:10].tolist()} are in the image but not "
            "in the labels table; they are named 'label_<n>'. Add them to the table.",
            BrainmapsWarning,
            stacklevel=3,
        )
    if warn and len(absent):
        warnings.warn(
            f"atlas {name!r}: {len(absent)} labels-table rows (e.g. {absent[:10].tolist()}) "
            "are absent from the image and dropped; check that the table belongs to it.",
            BrainmapsWarning,
            stacklevel=3,
        )
    extra = pd.DataFrame({"index": unnamed, "name": [f"label_{v}" for v in unnamed]})
    extra["hemisphere"] = ""
    table = pd.concat([table[table["index"].isin(present)], extra], ignore_index=True)
    table = table.sort_values("index").reset_index(drop=True)
    object.__setattr__(atlas, "labels", table)
    return atlas


def resample_nearest(
    data: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target_affine: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of ``data`` onto a grid, through both affines.

    Every target voxel centre takes the value of the source voxel that contains it (its
    cube of one voxel around the centre), 0 outside the source. Unlike scipy's
    ``mode="constant"`` (used by nilearn), a target centre less than half a voxel
    outside the outermost source centres still lies in the source's field of view.

    Parameters
    ----------
    data : numpy.ndarray
        3D source array.
    affine : numpy.ndarray
        Its voxel-to-world matrix.
    shape : tuple of int
        Target shape (3D).
    target_affine : numpy.ndarray
        Target voxel-to-world matrix.

    Returns
    -------
    numpy.ndarray
        Same dtype as ``data``, shape ``shape[:3]``.
    """
    vox = np.linalg.solve(np.asarray(affine, float), np.asarray(target_affine, float))
    return ndimage.affine_transform(
        data,
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=tuple(shape[:3]),
        order=0,
        mode="grid-constant",
        cval=0,
        prefilter=False,
    )


def atlas_on_grid(atlas: Atlas, target_img: nib.Nifti1Image) -> np.ndarray:
    """The atlas labels on ``target_img``'s grid, nearest neighbour through the affines.

    Parameters
    ----------
    atlas : Atlas
    target_img : nibabel.Nifti1Image
        Any image whose grid (shape and affine) the labels are wanted on.

    Returns
    -------
    numpy.ndarray
        ``int32`` labels of shape ``target_img.shape[:3]``; 0 outside the atlas.
    """
    return resample_nearest(atlas.data, atlas.img.affine, target_img.shape, target_img.affine)


def region_centroids(atlas: Atlas) -> pd.DataFrame:
    """Centre of mass (world mm) and voxel count of every region, on the atlas's grid.

    Parameters
    ----------
    atlas : Atlas

    Returns
    -------
    pandas.DataFrame
        ``label``, ``centroid_x``, ``centroid_y``, ``centroid_z``, ``n_voxels`` (one row
        per row of ``atlas.labels``, in the same order).
    """
    flat = atlas.data.ravel()
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    ijk = np.unravel_index(fg, atlas.data.shape)
    size = int(lab.max()) + 1 if lab.size else 1
    counts = np.bincount(lab, minlength=size).astype(np.float64)
    index = atlas.labels["index"].to_numpy()
    n = counts[index]
    centres = np.stack([np.bincount(lab, weights=c, minlength=size)[index] for c in ijk], 1)
    world = nib.affines.apply_affine(atlas.img.affine, centres / np.maximum(n, 1)[:, None])
    table = pd.DataFrame(world, columns=["centroid_x", "centroid_y", "centroid_z"])
    table.insert(0, "label", index)
    table["n_voxels"] = n.astype(np.int64)
    return table
