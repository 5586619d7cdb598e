"""Classical baselines on the folds of a CNN run: voxel SVMs and morphometry models.

Kan et al. compare their 3D CNN with an RBF SVM on voxels and with logistic regression,
KNN and XGBoost on FreeSurfer features. This subpackage runs the same comparison on any
run folder, on identical folds, with nested grid searches, a corrected resampled t-test
against the CNN, and ``brainmaps morphometry`` to make regional features from an atlas
when no FreeSurfer table exists.

The names below are imported on first use (PEP 562): ``import brainmaps.baselines``
loads neither scikit-learn, XGBoost nor matplotlib until they are needed, and never torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainmaps.utils import lazy_exports

if TYPE_CHECKING:  # what static tools see; at run time names load on first use (PEP 562)
    from brainmaps.baselines.compare import (
        compare_models,
        corrected_resampled_ttest,
        format_comparison,
    )
    from brainmaps.baselines.core import BaselineResult, as_splits, nested_cv
    from brainmaps.baselines.morphometry import (
        morphometry_table,
        read_atlas_labels,
        run_morphometry,
    )
    from brainmaps.baselines.plots import importance_table, plot_importances
    from brainmaps.baselines.run import ALL_MODELS, run_baselines
    from brainmaps.baselines.tables import find_identifier_columns, load_features
    from brainmaps.baselines.tabular import TABULAR_MODELS, cross_validate_tabular
    from brainmaps.baselines.voxels import VOXEL_MODELS, cross_validate_voxels, voxel_matrix

#: Module (relative to this package, or absolute) -> the public names it defines,
#: exported here and imported on first use.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    ".compare": ("compare_models", "corrected_resampled_ttest", "format_comparison"),
    ".core": ("BaselineResult", "as_splits", "nested_cv"),
    ".morphometry": ("morphometry_table", "read_atlas_labels", "run_morphometry"),
    ".plots": ("importance_table", "plot_importances"),
    ".run": ("ALL_MODELS", "run_baselines"),
    ".tables": ("find_identifier_columns", "load_features"),
    ".tabular": ("TABULAR_MODELS", "cross_validate_tabular"),
    ".voxels": ("VOXEL_MODELS", "cross_validate_voxels", "voxel_matrix"),
}
__all__ = [
    "ALL_MODELS",
    "TABULAR_MODELS",
    "VOXEL_MODELS",
    "BaselineResult",
    "as_splits",
    "compare_models",
    "corrected_resampled_ttest",
    "cross_validate_tabular",
    "cross_validate_voxels",
    "find_identifier_columns",
    "format_comparison",
    "importance_table",
    "load_features",
    "morphometry_table",
    "nested_cv",
    "plot_importances",
    "read_atlas_labels",
    "run_baselines",
    "run_morphometry",
    "voxel_matrix",
]

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
