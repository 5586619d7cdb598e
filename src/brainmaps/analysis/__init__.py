"""Analysis of attribution maps (NumPy / nibabel / nilearn only, no torch).

Works on maps from any tool: overlap between methods (Dice, Jaccard, rank correlation),
localisation against a known ground truth, atlas-region ranking, faithfulness curves and
group statistics.
"""

from brainmaps.analysis.maps import (
    as_img,
    class_mean_maps,
    ground_truth_mask,
    list_map_methods,
    on_grid_of,
    run_brain_mask,
)
from brainmaps.analysis.overlap import (
    PAPER_THRESHOLDS,
    binarize,
    compare_maps,
    compare_run,
    dice,
    jaccard,
    map_correlation,
    overlap_matrix,
)

__all__ = [
    "PAPER_THRESHOLDS",
    "as_img",
    "binarize",
    "class_mean_maps",
    "compare_maps",
    "compare_run",
    "dice",
    "ground_truth_mask",
    "jaccard",
    "list_map_methods",
    "map_correlation",
    "on_grid_of",
    "overlap_matrix",
    "run_brain_mask",
]
