"""Data layer: NIfTI I/O, cohorts (tables and BIDS), preprocessing, cache, synthetic cohorts."""

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
