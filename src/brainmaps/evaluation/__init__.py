"""Evaluation: splitters, leakage checks, metrics and statistics (torch-free).

NumPy, pandas, scikit-learn and SciPy only, so it serves the CNN runs
(:mod:`brainmaps.training`), the classical baselines (:mod:`brainmaps.baselines`) and
scores made by any other tool alike.

- :mod:`~brainmaps.evaluation.splitters`: cross-validation folds grouped by subject and
  stratified by label, inner validation splits, user-supplied folds, leakage checks.
- :mod:`~brainmaps.evaluation.sites`: folds that leave whole acquisition sites out, and the
  check that no site is in two folds.
- :mod:`~brainmaps.evaluation.metrics`: classification and regression metrics per fold,
  summarised as mean ± std.
- :mod:`~brainmaps.evaluation.statistics`: the corrected resampled t-test of two models
  scored on the same folds, Benjamini-Hochberg FDR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainmaps.utils import lazy_exports

if TYPE_CHECKING:  # what static tools see; at run time names load on first use (PEP 562)
    from brainmaps.evaluation.metrics import (
        classification_metrics,
        format_metrics_table,
        regression_metrics,
        summarize_folds,
    )
    from brainmaps.evaluation.sites import check_site_leakage, make_site_folds
    from brainmaps.evaluation.splitters import (
        check_class_counts,
        check_no_leakage,
        folds_table,
        inner_split,
        make_folds,
        read_folds,
    )
    from brainmaps.evaluation.statistics import benjamini_hochberg, corrected_resampled_ttest

#: Module (relative to this package, or absolute) -> the public names it defines,
#: exported here and imported on first use.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    ".metrics": (
        "classification_metrics",
        "format_metrics_table",
        "regression_metrics",
        "summarize_folds",
    ),
    ".splitters": (
        "check_class_counts",
        "check_no_leakage",
        "folds_table",
        "inner_split",
        "make_folds",
        "read_folds",
    ),
    ".sites": ("check_site_leakage", "make_site_folds"),
    ".statistics": ("benjamini_hochberg", "corrected_resampled_ttest"),
}
__all__ = [
    "benjamini_hochberg",
    "check_class_counts",
    "check_no_leakage",
    "check_site_leakage",
    "classification_metrics",
    "corrected_resampled_ttest",
    "folds_table",
    "format_metrics_table",
    "inner_split",
    "make_folds",
    "make_site_folds",
    "read_folds",
    "regression_metrics",
    "summarize_folds",
]

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
