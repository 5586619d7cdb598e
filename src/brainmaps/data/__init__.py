"""Data layer: NIfTI I/O, cohorts (tables and BIDS), preprocessing, cache, synthetic cohorts.

The names below are imported on first use (PEP 562): ``import brainmaps.data`` loads
neither SimpleITK nor scikit-learn until a function that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainmaps.utils import lazy_exports

if TYPE_CHECKING:  # what static tools see; at run time names load on first use (PEP 562)
    from brainmaps.data.cache import CachedVolumes, cache_volumes
    from brainmaps.data.cohort import Cohort, load_cohort
    from brainmaps.data.io import check_volume, load_img, save_array, save_img
    from brainmaps.data.pipeline import list_scans, output_paths, preprocess_cohort
    from brainmaps.data.preprocess import (
        DEFAULT_GRID_SHAPE,
        Grid,
        PreprocessConfig,
        mni_brain_mask,
        mni_grid,
        normalize,
        parse_grid,
        preprocess_img,
        reorient_canonical,
        resample_to_grid,
    )
    from brainmaps.data.qc import flag_outliers, plot_qc_mosaic, qc_correlations
    from brainmaps.data.registration import TEMPLATE_SPACE, RegistrationConfig, register_img
    from brainmaps.data.synthetic import SynthConfig, list_regions, make_synthetic_cohort
    from brainmaps.data.transforms import (
        apply_transform,
        read_transform,
        transform_matrix,
        write_transform,
    )

#: Module (relative to this package, or absolute) -> the public names it defines,
#: exported here and imported on first use.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    ".cache": ("CachedVolumes", "cache_volumes"),
    ".cohort": ("Cohort", "load_cohort"),
    ".io": ("check_volume", "load_img", "save_array", "save_img"),
    ".pipeline": ("list_scans", "output_paths", "preprocess_cohort"),
    ".preprocess": (
        "DEFAULT_GRID_SHAPE",
        "Grid",
        "PreprocessConfig",
        "mni_brain_mask",
        "mni_grid",
        "normalize",
        "parse_grid",
        "preprocess_img",
        "reorient_canonical",
        "resample_to_grid",
    ),
    ".qc": ("flag_outliers", "plot_qc_mosaic", "qc_correlations"),
    ".registration": ("TEMPLATE_SPACE", "RegistrationConfig", "register_img"),
    ".synthetic": ("SynthConfig", "list_regions", "make_synthetic_cohort"),
    ".transforms": ("apply_transform", "read_transform", "transform_matrix", "write_transform"),
}
__all__ = [
    "DEFAULT_GRID_SHAPE",
    "TEMPLATE_SPACE",
    "CachedVolumes",
    "Cohort",
    "Grid",
    "PreprocessConfig",
    "RegistrationConfig",
    "SynthConfig",
    "apply_transform",
    "cache_volumes",
    "check_volume",
    "flag_outliers",
    "list_regions",
    "list_scans",
    "load_cohort",
    "load_img",
    "make_synthetic_cohort",
    "mni_brain_mask",
    "mni_grid",
    "normalize",
    "output_paths",
    "parse_grid",
    "plot_qc_mosaic",
    "preprocess_cohort",
    "preprocess_img",
    "qc_correlations",
    "read_transform",
    "register_img",
    "reorient_canonical",
    "resample_to_grid",
    "save_array",
    "save_img",
    "transform_matrix",
    "write_transform",
]

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
