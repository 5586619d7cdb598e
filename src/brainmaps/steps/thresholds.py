"""The ``thresholds`` step: operating points of a binary run, chosen without its test subjects.

BrainImageNet (Lu et al. 2022, J. Big Data 9:101) reports its fold ensembles' ROC curve and
the sensitivity and specificity at chosen thresholds. Here each rule's threshold for fold
``k`` is chosen on the out-of-fold predictions of the other folds and applied to fold
``k`` (:func:`brainmaps.evaluation.operating_points.operating_points`), so the pooled
metrics are honest; the threshold for new data is chosen on every out-of-fold prediction.
"""

from __future__ import annotations

import os
from pathlib import Path

from brainmaps.evaluation.operating_points import calibration_curve, operating_points, roc_points
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step
from brainmaps.training.oof_thresholds import oof_scores
from brainmaps.utils import write_tsv

__all__ = ["STEP", "default_rules", "thresholds"]


def default_rules(
    sensitivity: float | None = 0.9, specificity: float | None = 0.9, value: float | None = None
) -> list[str]:
    """``0.5``, ``youden``, ``sens=S``, ``spec=S`` and the value, for those given."""
    rules = ["0.5", "youden"]
    rules += [f"sens={sensitivity:g}"] if sensitivity is not None else []
    rules += [f"spec={specificity:g}"] if specificity is not None else []
    return rules + ([f"{value:g}"] if value is not None else [])


def thresholds(
    run_dir: str | os.PathLike | RunFolder,
    *,
    sensitivity: float | None = 0.9,
    specificity: float | None = 0.9,
    value: float | None = None,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    n_bins: int = 10,
    seed: int = 0,
) -> Path:
    """Write the operating points, ROC and calibration curves of a binary run.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A binary classification run with ``predictions.tsv`` (out-of-fold).
    sensitivity, specificity : float or None
        Targets of the ``sens=S`` and ``spec=S`` rules (``None``: no such row).
    value : float, optional
        A fixed threshold in (0, 1) to evaluate beside ``0.5``.
    n_bootstrap, level, seed
        Stratified bootstrap of the nested calls
        (:func:`~brainmaps.evaluation.operating_points.bootstrap_metrics`).
    n_bins : int
        Quantile bins of the calibration curve.

    Returns
    -------
    pathlib.Path
        ``analysis/thresholds.tsv`` (one row per rule, see
        :func:`~brainmaps.evaluation.operating_points.operating_points`), beside
        ``analysis/roc.tsv`` (``fpr, tpr, threshold``) and ``analysis/calibration.tsv``
        (``bin, n, mean_predicted, observed``). Thresholds apply to ``p_<classes[1]>``.

    Raises
    ------
    ConfigError
        Not a binary classification run, no predictions, or a bad rule.
    """
    run = open_run(run_dir)
    y, score, folds = oof_scores(run)
    rules = default_rules(sensitivity, specificity, value)
    table = operating_points(
        y, score, folds, rules, n_bootstrap=n_bootstrap, level=level, seed=seed
    )
    table.insert(1, "positive", run.classes[1])
    write_tsv(roc_points(y, score), run.layout.roc)
    write_tsv(calibration_curve(y, score, n_bins=n_bins), run.layout.calibration)
    out = write_tsv(table, run.layout.thresholds)
    record_stage(
        run, "thresholds", rules=list(table["rule"]), n_bootstrap=int(n_bootstrap),
        level=float(level), n_bins=int(n_bins), seed=int(seed),
    )  # fmt: skip
    return out


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    if not run.task.is_classification or len(run.classes) != 2:
        return "binary classification runs only"
    if not run.layout.predictions.is_file():
        return f"no out-of-fold predictions; finish 'brainmaps train' for {run.path}"
    return None


STEP = register_step(
    Step(
        name="thresholds",
        order=5,
        command="brainmaps thresholds",
        output=lambda run, options: run.layout.thresholds,
        compute=lambda run, methods, options: thresholds(run),
        skip=_skip,
        inputs=lambda run: [run.layout.predictions, run.layout.folds],
    )
)
