"""Data layer: NIfTI I/O, cohorts (tables and BIDS), preprocessing, cache, synthetic cohorts."""

from brainmaps.data.cache import CachedVolumes, cache_volumes
from brainmaps.data.cohort import Cohort, load_cohort
from brainmaps.data.io import check_volume, load_img, save_array, save_img
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
from brainmaps.data.synthetic import SynthConfig, list_regions, make_synthetic_cohort

__all__ = [
    "DEFAULT_GRID_SHAPE",
    "CachedVolumes",
    "Cohort",
    "Grid",
    "PreprocessConfig",
    "SynthConfig",
    "cache_volumes",
    "check_volume",
    "list_regions",
    "load_cohort",
    "load_img",
    "make_synthetic_cohort",
    "mni_brain_mask",
    "mni_grid",
    "normalize",
    "parse_grid",
    "preprocess_img",
    "reorient_canonical",
    "resample_to_grid",
    "save_array",
    "save_img",
]
