"""Built-in regions, the MNI152 template space and the smooth fields of synthetic cohorts.

The templates are nilearn's bundled MNI152 (2009, symmetric) T1, grey-matter, white-matter
and brain-mask images; they ship inside the nilearn wheel, so nothing is downloaded. They
are resampled once per voxel size onto an MNI grid covering the usual MNI152 bounding box
(x in [-90, 90], y in [-126, 90], z in [-72, 108] mm; 91 x 109 x 91 voxels at 2 mm) and
cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

from brainmaps.exceptions import ConfigError

__all__ = [
    "DEFAULT_AGE_REGIONS",
    "DEFAULT_REGIONS",
    "REGIONS",
    "Region",
    "TemplateSpace",
    "get_region",
    "grid_for",
    "intensity_weight",
    "list_regions",
    "load_template_space",
    "radial_warp",
    "region_distance",
    "region_mask",
    "smooth_field",
]

_BOX_CENTRE = np.array([0.0, -18.0, 18.0])
_BOX_EXTENT = np.array([180.0, 216.0, 180.0])
_TISSUES = ("gm", "wm", "brain")


@dataclass(frozen=True)
class Region:
    """A spherical region at a known MNI coordinate, restricted to one tissue.

    Parameters
    ----------
    name : str
        snake_case name used in configurations and on the command line.
    centre : tuple of float
        Centre of the sphere in MNI152 world coordinates (mm, RAS+).
    radius : float
        Radius of the sphere in mm.
    tissue : {"gm", "wm", "brain"}
        Template tissue the sphere is intersected with (probability >= 0.5).
    description : str
        Anatomy covered, for the cohort's README.
    """

    name: str
    centre: tuple[float, float, float]
    radius: float
    tissue: str
    description: str


def _pair(name: str, centre: tuple, radius: float, tissue: str, what: str) -> list[Region]:
    x, y, z = centre
    return [
        Region(f"left_{name}", (-x, y, z), radius, tissue, f"left {what}"),
        Region(f"right_{name}", (x, y, z), radius, tissue, f"right {what}"),
    ]


_TABLE = [
    *_pair(
        "hippocampus",
        (26.0, -22.0, -14.0),
        15.0,
        "gm",
        "hippocampus, amygdala and parahippocampal gyrus",
    ),
    *_pair("thalamus", (11.0, -18.0, 7.0), 12.0, "gm", "thalamus"),
    *_pair(
        "lateral_ventricle",
        (8.0, -8.0, 20.0),
        15.0,
        "brain",
        "lateral ventricle body and surrounding tissue",
    ),
    *_pair("superior_frontal", (19.0, 29.0, 49.0), 15.0, "gm", "superior frontal gyrus"),
    *_pair("precentral", (38.0, -20.0, 55.0), 15.0, "gm", "precentral gyrus (motor cortex)"),
    *_pair("insula", (38.0, 4.0, 2.0), 12.0, "gm", "insula"),
    *_pair("middle_temporal", (55.0, -20.0, -10.0), 15.0, "gm", "middle temporal gyrus"),
    *_pair("cerebellum", (25.0, -65.0, -35.0), 15.0, "gm", "cerebellar hemisphere"),
    *_pair("frontal_white_matter", (26.0, 20.0, 25.0), 12.0, "wm", "frontal white matter"),
    Region("precuneus", (0.0, -58.0, 38.0), 15.0, "gm", "precuneus (both hemispheres)"),
    Region(
        "anterior_cingulate", (0.0, 35.0, 20.0), 12.0, "gm", "anterior cingulate (both hemispheres)"
    ),
    Region(
        "visual_cortex",
        (0.0, -85.0, 5.0),
        15.0,
        "gm",
        "calcarine cortex and cuneus (both hemispheres)",
    ),
]

#: Built-in regions by name.
REGIONS: dict[str, Region] = {r.name: r for r in _TABLE}
#: Regions of the planted group effect by default (bilateral hippocampal atrophy).
DEFAULT_REGIONS: tuple[str, ...] = ("left_hippocampus", "right_hippocampus")
#: Regions of the planted age effect by default (ventricle enlargement).
DEFAULT_AGE_REGIONS: tuple[str, ...] = ("left_lateral_ventricle", "right_lateral_ventricle")


def list_regions() -> list[str]:
    """Return the names of the built-in regions, sorted.

    Returns
    -------
    list of str
        Names accepted by ``SynthConfig(regions=...)``.
    """
    return sorted(REGIONS)


def get_region(name: str, parameter: str = "regions") -> Region:
    """Return the built-in region called ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_regions`.
    parameter : str
        Name of the parameter that held ``name``, for the error message.

    Returns
    -------
    Region

    Raises
    ------
    ConfigError
        If no region has that name.
    """
    if name not in REGIONS:
        raise ConfigError(
            f"{parameter}: unknown region {name!r}; expected one of {', '.join(list_regions())}. "
            "Fix the region name (brainmaps.data.synthetic.list_regions() lists them)."
        )
    return REGIONS[name]


@dataclass(frozen=True)
class TemplateSpace:
    """The MNI152 templates resampled onto one voxel grid (arrays are read-only).

    Attributes
    ----------
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine (RAS+, diagonal).
    shape : tuple of int
        Grid shape.
    t1 : ndarray
        T1 template, intensities in [0, 1] (about 0.3 CSF, 0.65 GM, 0.86 WM).
    gm, wm, brain : ndarray
        Grey-matter and white-matter probabilities and brain-mask fraction in [0, 1].
    support : ndarray of int
        Flat indices of voxels within 20 mm of the brain, where subjects are simulated.
    points : ndarray, shape (3, n_support), float32
        World coordinates (mm) of the support voxels.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray
    support: np.ndarray
    points: np.ndarray

    @property
    def voxel_size(self) -> float:
        """Voxel size in mm."""
        return float(self.affine[0, 0])

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Convert world coordinates of shape (3, ...) in mm to voxel indices (float)."""
        origin = self.affine[:3, 3].reshape((3,) + (1,) * (xyz.ndim - 1))
        return (xyz - origin) / self.voxel_size


def grid_for(voxel_size: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Return the affine and shape of the MNI grid with cubic voxels of ``voxel_size`` mm."""
    shape = np.floor(_BOX_EXTENT / voxel_size + 1e-6).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] *= voxel_size
    affine[:3, 3] = _BOX_CENTRE - (shape - 1) * voxel_size / 2.0
    return affine, (int(shape[0]), int(shape[1]), int(shape[2]))


def _resample(img, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Anti-aliased linear resampling of a 1 mm template image onto ``(affine, shape)``."""
    data = np.asarray(img.get_fdata(dtype=np.float32))
    src_mm = float(abs(img.affine[0, 0]))
    voxel_size = float(affine[0, 0])
    if voxel_size > src_mm:  # Gaussian with the FWHM that brings the resolution to voxel_size
        sigma = np.sqrt(voxel_size**2 - src_mm**2) / (2.0 * np.sqrt(2.0 * np.log(2.0))) / src_mm
        data = ndimage.gaussian_filter(data, sigma, mode="constant")
    to_src = np.linalg.inv(img.affine) @ affine
    out = ndimage.affine_transform(
        data, to_src[:3, :3], to_src[:3, 3], output_shape=shape, order=1, mode="constant"
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def load_template_space(voxel_size: float) -> TemplateSpace:
    """Load nilearn's MNI152 templates resampled to ``voxel_size`` mm (cached).

    Parameters
    ----------
    voxel_size : float
        Edge of the cubic voxels in mm.

    Returns
    -------
    TemplateSpace
    """
    from nilearn import datasets

    affine, shape = grid_for(voxel_size)
    arrays = {
        key: _resample(loader(), affine, shape)
        for key, loader in [
            ("t1", datasets.load_mni152_template),
            ("gm", datasets.load_mni152_gm_template),
            ("wm", datasets.load_mni152_wm_template),
            ("brain", datasets.load_mni152_brain_mask),
        ]
    }
    distance = ndimage.distance_transform_edt(arrays["brain"] < 0.5) * voxel_size
    support = np.flatnonzero(distance <= 20.0)
    ijk = np.stack(np.unravel_index(support, shape)).astype(np.float64)
    points = (affine[:3, :3] @ ijk + affine[:3, 3:]).astype(np.float32)
    for arr in (*arrays.values(), support, points):
        arr.flags.writeable = False
    return TemplateSpace(affine, shape, support=support, points=points, **arrays)


def region_distance(space: TemplateSpace, region: Region) -> np.ndarray:
    """Distance (mm) of every grid voxel from the region's centre."""
    axes = [
        space.affine[d, 3] + space.voxel_size * np.arange(n) - region.centre[d]
        for d, n in enumerate(space.shape)
    ]
    sq = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    return np.sqrt(sq)


def region_mask(space: TemplateSpace, region: Region) -> np.ndarray:
    """Boolean mask of the region: its sphere intersected with its tissue (probability >= 0.5).

    Parameters
    ----------
    space : TemplateSpace
        Grid and templates, from :func:`load_template_space`.
    region : Region
        The region.

    Returns
    -------
    ndarray of bool, shape ``space.shape``
    """
    if region.tissue not in _TISSUES:
        raise ConfigError(f"region {region.name!r}: tissue must be one of {_TISSUES}")
    tissue = getattr(space, region.tissue)
    return (region_distance(space, region) <= region.radius) & (tissue >= 0.5)


@functools.lru_cache(maxsize=16)
def spline_basis(n_ctrl: int, n_out: int) -> np.ndarray:
    """(n_out, n_ctrl) matrix that interpolates n_ctrl nodes with a cubic spline."""
    t = np.linspace(0.0, n_ctrl - 1.0, n_out)
    return CubicSpline(np.arange(n_ctrl), np.eye(n_ctrl), axis=0)(t).astype(np.float32)


def smooth_field(nodes: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Upsample node values (..., a, b, c) over the whole grid with cubic splines."""
    bx, by, bz = (spline_basis(k, n) for k, n in zip(nodes.shape[-3:], shape, strict=True))
    return np.einsum("...ijk,xi,yj,zk->...xyz", nodes.astype(np.float32), bx, by, bz, optimize=True)


def radial_warp(points: np.ndarray, centre: tuple, radius: float, strength: float) -> None:
    """Pull (strength > 0) or push the sampling points radially around ``centre``, in place.

    A point at distance r < radius samples the template at distance r (1 + s (1 - r^2/R^2)^2)
    from the centre: tissue near the centre appears contracted by 1 / (1 + s) (s > 0) or
    expanded; the map is smooth and invertible for -1 < s < 1.25.
    """
    c = np.asarray(centre, dtype=np.float32)[:, None]
    diff = points - c
    r2 = np.einsum("i...,i...->...", diff, diff) / np.float32(radius**2)
    sel = r2 < 1.0
    factor = 1.0 + np.float32(strength) * (1.0 - r2[sel]) ** 2
    points[:, sel] = c + diff[:, sel] * factor


@functools.lru_cache(maxsize=8)
def intensity_weight(voxel_size: float, regions: tuple[str, ...]) -> np.ndarray:
    """Weight in [0, 1] of the intensity effect: flat to R/2, cosine taper to R, x tissue."""
    space = load_template_space(voxel_size)
    weight = np.zeros(space.shape, dtype=np.float32)
    for name in regions:
        region = get_region(name)
        rho = region_distance(space, region) / region.radius
        taper = 0.5 * (1.0 + np.cos(np.pi * np.clip(2.0 * rho - 1.0, 0.0, 1.0)))
        weight = np.maximum(weight, taper * getattr(space, region.tissue))
    weight.flags.writeable = False
    return weight
