"""Classical baselines on the folds of a CNN run: voxel SVMs and morphometry models.

Kan et al. compare their 3D CNN with an RBF SVM on voxels and with logistic regression,
KNN and XGBoost on FreeSurfer features. This subpackage runs the same comparison on any
run folder, on identical folds, with nested grid searches, a corrected resampled t-test
against the CNN, and ``brainmaps morphometry`` to make regional features from an atlas
when no FreeSurfer table exists.
"""

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
