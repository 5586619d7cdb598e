"""Analysis of attribution maps (NumPy / nibabel / nilearn only, no torch).

Works on maps from any tool: overlap between methods (Dice, Jaccard, rank correlation),
localisation against a known ground truth, atlas-region ranking, faithfulness curves and
group statistics.

The names below are imported on first use (PEP 562), so ``import brainmaps.analysis``
loads only what the functions you call need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainmaps.utils import lazy_exports

if TYPE_CHECKING:  # what static tools see; at run time names load on first use (PEP 562)
    from brainmaps.analysis.atlas import Atlas, atlas_on_grid, load_atlas, region_centroids
    from brainmaps.analysis.builtin_atlases import (
        DEFAULT_ATLAS,
        get_atlas,
        list_builtin_atlases,
        load_builtin_atlas,
    )
    from brainmaps.analysis.faithfulness import curve_auc, deletion_curve, insertion_curve
    from brainmaps.analysis.group_stats import benjamini_hochberg, compare_groups, count_larger
    from brainmaps.analysis.localisation import (
        localisation_roc,
        localisation_run,
        localisation_scores,
        pointing_game,
    )
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
    from brainmaps.analysis.regions import check_hemispheres, rank_regions, rank_run_regions

#: Module (relative to this package, or absolute) -> the public names it defines,
#: exported here and imported on first use.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    ".atlas": ("Atlas", "atlas_on_grid", "load_atlas", "region_centroids"),
    ".builtin_atlases": (
        "DEFAULT_ATLAS",
        "get_atlas",
        "list_builtin_atlases",
        "load_builtin_atlas",
    ),
    ".faithfulness": ("curve_auc", "deletion_curve", "insertion_curve"),
    ".group_stats": ("benjamini_hochberg", "compare_groups", "count_larger"),
    ".localisation": (
        "localisation_roc",
        "localisation_run",
        "localisation_scores",
        "pointing_game",
    ),
    ".maps": (
        "as_img",
        "class_mean_maps",
        "ground_truth_mask",
        "list_map_methods",
        "on_grid_of",
        "run_brain_mask",
    ),
    ".overlap": (
        "PAPER_THRESHOLDS",
        "binarize",
        "compare_maps",
        "compare_run",
        "dice",
        "jaccard",
        "map_correlation",
        "overlap_matrix",
    ),
    ".regions": ("check_hemispheres", "rank_regions", "rank_run_regions"),
}
__all__ = [
    "DEFAULT_ATLAS",
    "PAPER_THRESHOLDS",
    "Atlas",
    "as_img",
    "atlas_on_grid",
    "benjamini_hochberg",
    "binarize",
    "check_hemispheres",
    "class_mean_maps",
    "compare_groups",
    "compare_maps",
    "compare_run",
    "count_larger",
    "curve_auc",
    "deletion_curve",
    "dice",
    "get_atlas",
    "ground_truth_mask",
    "insertion_curve",
    "jaccard",
    "list_builtin_atlases",
    "list_map_methods",
    "load_atlas",
    "load_builtin_atlas",
    "localisation_roc",
    "localisation_run",
    "localisation_scores",
    "map_correlation",
    "on_grid_of",
    "overlap_matrix",
    "pointing_game",
    "rank_regions",
    "rank_run_regions",
    "region_centroids",
    "run_brain_mask",
]

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
