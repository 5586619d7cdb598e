"""Run the classical baselines on the folds of a CNN run and compare them with the CNN.

Writes ``<run>/baselines/``::

    metrics.tsv            model x fold, then each model's mean and std
    predictions.tsv        out-of-fold predictions (as the run's predictions.tsv, + model)
    params.tsv             hyper-parameters chosen by the inner grid search, per fold
    comparison.tsv         CNN and every baseline: mean, std and corrected t-test vs the CNN
    importances_<m>.tsv    lr/ridge: standardised coefficients; xgb: gain (and a .png plot)
    metrics_repeats.tsv    repeated CV only: model x repeat x fold, then each model's
                           mean and std over all repeats' folds

A run of ``training.repeats = R > 1`` (repeated cross-validation) gets every baseline
fitted on every repeat's folds too, on exactly the train/test subjects of the CNN's
repeat folds (``repeats/repeat-<r>/folds.tsv``); repeat r's metrics, predictions and
params go to ``repeats/repeat-<r>/baselines/``, and ``comparison.tsv`` pools the R x k
folds (the corrected repeated k-fold t-test, :mod:`brainmaps.baselines.compare`).

Regression baselines are bias-corrected as the CNN is (:mod:`brainmaps.baselines.bias`):
each fold's line is fitted on the run's ``val`` rows of that fold when it has at least
three, else on inner cross-validation predictions of its training rows; predictions gain
``gap``, ``prediction_corrected``, ``gap_corrected``, ``train_mean`` and metrics
``r_gap_y``, ``mae_corrected``, ``r_gap_y_corrected``, ``mae_mean_predictor``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.baselines.compare import compare_models
from brainmaps.baselines.core import BaselineResult, fold_metrics
from brainmaps.baselines.plots import plot_importances
from brainmaps.baselines.tables import load_features
from brainmaps.baselines.tabular import (
    REGRESSION_MODELS,
    TABULAR_MODELS,
    cross_validate_tabular,
)
from brainmaps.baselines.voxels import (
    VOXEL_MODELS,
    cross_validate_voxels,
    nonzero_mask,
    voxel_matrix,
)
from brainmaps.data.preprocess import mni_brain_mask
from brainmaps.evaluation.metrics import summarize_folds
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.stages import write_stage
from brainmaps.utils import write_tsv

__all__ = ["ALL_MODELS", "run_baselines"]

#: Every baseline name, in the order of the comparison table.
ALL_MODELS = (*VOXEL_MODELS, *TABULAR_MODELS)
_IMPORTANCE_LABELS = {
    "lr": "standardised coefficient (mean ± sd over folds)",
    "ridge": "standardised coefficient (mean ± sd over folds)",
    "xgb": "gain (mean ± sd over folds)",
}


def _check_models(models: Sequence[str] | str, features, task) -> list[str]:
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    models = list(dict.fromkeys(str(m).lower() for m in models))
    unknown = [m for m in models if m not in ALL_MODELS]
    if not models or unknown:
        raise ConfigError(
            f"models: unknown or no baseline(s) {unknown or models}; choose from "
            f"{', '.join(ALL_MODELS)} (classification e.g. --models svm,lr,knn,xgb; regression "
            "e.g. --models svm,ridge,svr,gpr: svm/svm_linear are voxel SVRs there, "
            f"{', '.join(REGRESSION_MODELS)} are regression-only table models)."
        )
    wrong = [m for m in models if m in REGRESSION_MODELS and task.is_classification]
    if wrong:
        raise ConfigError(
            f"models: {', '.join(wrong)} are regression baselines, found a classification run; "
            "choose from svm, svm_linear, lr, knn, xgb."
        )
    tabular = [m for m in models if m in TABULAR_MODELS]
    if tabular and features is None:
        raise ConfigError(
            f"model(s) {', '.join(tabular)} need a table of morphometric features: pass "
            "features=... (CLI --features TABLE), e.g. FreeSurfer or DLMUSE volumes, or a "
            "table made by 'brainmaps morphometry RUN --atlas ... --labels ... --out ...'."
        )
    return models


def _voxels(run: RunFolder, n_jobs: int, progress: bool) -> np.ndarray:
    volumes = run.volumes(n_jobs=n_jobs, progress=progress)
    mask = mni_brain_mask(run.grid)
    if not mask.any():
        mask = nonzero_mask(volumes)
    return voxel_matrix(volumes, mask, progress=progress)


def _predictions(run: RunFolder, result: BaselineResult) -> pd.DataFrame:
    tested = result.fold >= 0
    rows = run.table.loc[tested, ["subject", "session", "label", "y"]].reset_index(drop=True)
    rows.insert(0, "fold", result.fold[tested])
    rows.insert(0, "model", result.name)
    frame = run.task.prediction_frame(rows, result.outputs[tested])
    if result.corrected is None:
        return frame
    y, pred, corrected = rows["y"].to_numpy(float), result.outputs[tested], result.corrected[tested]
    return frame.assign(  # the columns of a CNN regression run's predictions
        gap=pred - y,
        prediction_corrected=corrected,
        gap_corrected=corrected - y,
        train_mean=result.train_mean[tested],
    )


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    dtypes = {"fold": str, "subject": str, "session": str, "label": str, "model": str}
    return pd.read_csv(path, sep="\t", dtype=dtypes, keep_default_na=False)


def _merge(path: Path, new: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Replace the rows of ``models`` in an existing table; keep the other models' rows."""
    old = _read(path)
    if old is not None and "model" in old.columns:
        new = pd.concat([old[~old["model"].isin(models)], new], ignore_index=True)
    order = {m: i for i, m in enumerate(ALL_MODELS)}
    key = new["model"].map(order).fillna(len(order))
    return new.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def _write_results(
    run: RunFolder, results: dict[str, BaselineResult], importances: bool = True
) -> pd.DataFrame:
    """Write (merge) the metrics, predictions and params of ``results`` under the run's
    (or a repeat's) ``baselines/``; the importances only with ``importances``."""
    models, layout = list(results), run.layout
    metrics = pd.concat([r.metrics.assign(model=m) for m, r in results.items()])
    metrics = metrics[["model", *[c for c in metrics.columns if c != "model"]]]
    metrics = _merge(layout.baselines("metrics"), metrics, models)
    predictions = pd.concat([_predictions(run, r) for r in results.values()])
    params = pd.DataFrame(
        [
            {"model": m, "fold": k, "params": json.dumps(p, sort_keys=True, default=str)}
            | ({"bias": json.dumps(r.bias[k], sort_keys=True)} if r.bias else {})
            for m, r in results.items()
            for k, p in enumerate(r.best_params)
        ]
    )
    for name, table in (("predictions", predictions), ("params", params)):
        path = layout.baselines(name)
        write_tsv(_merge(path, table, models), path)
    write_tsv(metrics, layout.baselines("metrics"))
    for m, r in results.items():
        if importances and r.importances is not None:
            write_tsv(r.importances, layout.importances(m))
            title = f"{m}: top features ({run.config.data.target})"
            plot_importances(
                r.importances,
                layout.importances(m, "png"),
                title=title,
                xlabel=_IMPORTANCE_LABELS[m],
            )
    return metrics


def _check_cnn_folds(run: RunFolder, predictions: pd.DataFrame) -> None:
    """The CNN's out-of-fold predictions must be on exactly the folds the baselines use."""
    keys = run.table["subject"].astype(str) + "/" + run.table["session"].astype(str)
    pred_keys = predictions["subject"].astype(str) + "/" + predictions["session"].astype(str)
    for k in range(run.n_folds):
        expected = set(keys.iloc[run.indices(k, "test")])
        found = set(pred_keys[predictions["fold"].astype(str) == str(k)])
        if found != expected:
            raise ConfigError(
                f"the CNN predictions of fold {k} in {run.path} are for other subjects than "
                f"{run.layout.folds.name} says ({len(found ^ expected)} differ); the run folder is "
                "inconsistent, train it again."
            )


def _cnn_fold_predictions(run: RunFolder) -> pd.DataFrame | None:
    parts = [_read(run.layout.fold_predictions(k)) for k in range(run.n_folds)]
    if any(p is None for p in parts):
        return None
    return pd.concat(parts, ignore_index=True)


def _cnn_metrics(run: RunFolder) -> pd.DataFrame | None:
    """Per-fold metrics of the run's CNN, checked to be on the run's folds.

    Read from ``metrics.tsv`` (or computed from ``fold-<k>/predictions.tsv``); None, with
    a warning, when the run has neither (training unfinished).
    """
    predictions = _cnn_fold_predictions(run)
    if predictions is not None:
        _check_cnn_folds(run, predictions)
    metrics = _read(run.layout.metrics)
    if metrics is None and predictions is not None:
        outputs = run.task.outputs_from_frame(predictions).astype(float)
        y = predictions["y"].to_numpy(dtype=int if run.task.is_classification else float)
        extra = [
            pd.to_numeric(predictions[c], errors="coerce").to_numpy() if c in predictions else None
            for c in ("prediction_corrected", "train_mean")
        ]
        fold = predictions["fold"].to_numpy(dtype=int)
        metrics = fold_metrics(run.task, y, outputs, fold, *extra)
    if metrics is None:
        warnings.warn(
            f"{run.path} has no {run.layout.METRICS} nor CNN predictions for every fold; the "
            "comparison lists the baselines only (finish 'brainmaps train' to compare with "
            "the CNN).",
            BrainmapsWarning,
            stacklevel=5,
        )
    return metrics


def _repeat_runs(run: RunFolder) -> list[RunFolder]:
    """Repeat r > 0 of a repeated run as a :class:`RunFolder` of the run's cohort with
    repeat r's folds and layout (``[]`` without repeats)."""
    repeats = []
    for r in range(1, run.config.training.repeats):
        layout = run.layout.repeat(r)
        if not layout.folds.is_file():
            raise ConfigError(
                f"{run.path} is a run of {run.config.training.repeats} repeats "
                f"(training.repeats) but has no {layout.folds}; resume 'brainmaps train' "
                "on it (the same command) first."
            )
        folds = pd.read_csv(
            layout.folds, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False
        )
        repeats.append(replace(run, path=layout.root, folds=folds))
    return repeats


def _fold_sizes(runs: Sequence[RunFolder]) -> tuple[float, float]:
    """Mean training and test sizes over every fold of every repeat."""
    sizes = [
        (len(rep.indices(k, "fit")), len(rep.indices(k, "test")))
        for rep in runs
        for k in range(rep.n_folds)
    ]
    n_train, n_test = np.mean(sizes, axis=0)
    return float(n_train), float(n_test)


def _pooled(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Fold rows of every repeat's table with a ``repeat`` column."""
    parts = [
        t[~t["fold"].astype(str).isin(("mean", "std"))].assign(repeat=str(r))
        for r, t in enumerate(tables)
    ]
    return pd.concat(parts, ignore_index=True)


def _per_fold(runs: Sequence[RunFolder], metrics: Sequence[pd.DataFrame]) -> dict:
    """Model -> per-fold metrics (with ``repeat`` when the run has repeats), CNN first."""
    per_fold = {}
    cnn = [_cnn_metrics(rep) for rep in runs]
    if all(c is not None for c in cnn):
        per_fold["cnn"] = cnn[0] if len(runs) == 1 else _pooled(cnn)
    for model in dict.fromkeys(metrics[0]["model"]):
        parts = [m[m["model"] == model].drop(columns="model") for m in metrics]
        if any(p.empty for p in parts):
            missing = [r for r, p in enumerate(parts) if p.empty]
            warnings.warn(
                f"baseline {model!r} has no metrics for repeat(s) {missing}; it is left out "
                f"of the comparison (run 'brainmaps baseline --models {model}' again).",
                BrainmapsWarning,
                stacklevel=4,
            )
            continue
        per_fold[str(model)] = parts[0] if len(runs) == 1 else _pooled(parts)
    return per_fold


def _write_pooled(run: RunFolder, per_fold: dict) -> None:
    """``baselines/metrics_repeats.tsv``: every baseline's (repeat, fold) rows, then its
    mean and std over all of them."""
    tables = []
    for model, table in per_fold.items():
        if model == "cnn":
            continue
        summary = summarize_folds(table)  # the str repeat column is not summarised
        summary["repeat"] = summary["repeat"].fillna("all")
        tables.append(summary.assign(model=model))
    if tables:
        pooled = pd.concat(tables, ignore_index=True)
        first = ["model", "repeat", "fold"]
        write_tsv(
            pooled[[*first, *[c for c in pooled if c not in first]]],
            run.layout.baselines("metrics_repeats"),
        )


def _compare(runs: Sequence[RunFolder], metrics: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The comparison over the folds of every repeat (``runs[0]``: the run itself)."""
    run = runs[0]
    per_fold = _per_fold(runs, metrics)
    if len(runs) > 1:
        _write_pooled(run, per_fold)
    n_train, n_test = _fold_sizes(runs)
    table = compare_models(
        per_fold,
        n_train=n_train,
        n_test=n_test,
        task=run.task,
        reference="cnn" if "cnn" in per_fold else None,
    )
    write_tsv(table, run.layout.baselines("comparison"))
    return table


def _fit(run: RunFolder, models, x, table, common) -> dict[str, BaselineResult]:
    """Every baseline of ``models`` cross-validated on the folds of ``run``."""
    splits = [(run.indices(k, "fit"), run.indices(k, "test")) for k in range(run.n_folds)]
    common = dict(common)
    if not run.task.is_classification:  # the bias line on the CNN's validation subjects
        common["bias_rows"] = [run.indices(k, "val") for k in range(run.n_folds)]
    results: dict[str, BaselineResult] = {}
    for m in (m for m in models if m in VOXEL_MODELS):
        results[m] = cross_validate_voxels(x, run.labels, splits, VOXEL_MODELS[m], **common)
    for m in (m for m in models if m in TABULAR_MODELS):
        results[m] = cross_validate_tabular(table, run.labels, splits, m, **common)
    return results


def run_baselines(
    run_dir: str | os.PathLike,
    models: Sequence[str] | str = ("svm", "lr", "knn", "xgb"),
    features: str | os.PathLike | None = None,
    *,
    n_jobs: int = 1,
    random_state: int = 0,
    progress: bool = True,
    inner_folds: int = 5,
) -> pd.DataFrame:
    """Cross-validate classical baselines on a run's folds and compare them with its CNN.

    Every baseline is trained on exactly the run's outer folds (``RunFolder.indices(k,
    "fit")``) and tested on its test folds, with hyper-parameters chosen by a grid search
    nested in each training part (see :mod:`brainmaps.baselines.core`). Kan et al.
    report their CNN at 0.92 ± 0.03 against an RBF SVM on voxels at 0.90 ± 0.02 and
    LR / XGBoost / KNN on FreeSurfer features at 0.92 / 0.89 / 0.85; the comparison here
    adds a corrected resampled t-test (Nadeau & Bengio 2003) of each baseline against
    the CNN on per-fold accuracy (MAE for regression).

    Parameters
    ----------
    run_dir : str or os.PathLike
        A run folder of ``brainmaps train`` (classification or regression).
    models : sequence of str or str
        From ``"svm"`` (RBF) and ``"svm_linear"`` on the run's voxels inside the MNI
        brain mask (SVC, or SVR on a regression run), and ``"lr"``, ``"knn"``, ``"xgb"``
        on ``features``; regression runs also ``"ridge"`` (= ``"lr"``), ``"svr"``,
        ``"svr_linear"`` and ``"gpr"`` on ``features`` (see
        :func:`~brainmaps.baselines.tabular.make_tabular_model`). A comma-separated
        string is accepted. Rows of models not run now are kept from earlier calls.
    features : str or os.PathLike, optional
        A table of morphometric features (see
        :func:`~brainmaps.baselines.tables.load_features`), e.g. regional volumes for
        brain age; required by the table models.
    n_jobs : int
        Parallel fits of the grid search (and preprocessing of uncached volumes).
    random_state : int
        Seeds the inner folds, XGBoost and the SVM's probability calibration.
    progress : bool
        Show progress bars.
    inner_folds : int
        Folds of the inner grid search.

    Returns
    -------
    pandas.DataFrame
        The comparison table written to ``<run>/baselines/comparison.tsv`` (see
        :func:`~brainmaps.baselines.compare.compare_models`); print it with
        :func:`~brainmaps.baselines.compare.format_comparison`.

    Raises
    ------
    ConfigError
        Unknown models, or a table model without ``features``.
    CohortError
        If the features table lacks subjects of the run.
    """
    run = open_run(run_dir)
    models = _check_models(models, features, run.task)
    table = None
    if any(m in TABULAR_MODELS for m in models):  # read first: fail before the slow part
        target = run.config.data.target
        exclude = [target] if target else []
        table = load_features(features, run.table["subject"], run.table["session"], exclude=exclude)
    runs = [run, *_repeat_runs(run)]
    common = {
        "groups": run.table["subject"].to_numpy(dtype=str),
        "task": run.task,
        "inner_folds": inner_folds,
        "random_state": random_state,
        "n_jobs": n_jobs,
        "progress": progress,
    }
    x = _voxels(run, n_jobs, progress) if any(m in VOXEL_MODELS for m in models) else None
    for r, rep in enumerate(runs):
        _write_results(rep, _fit(rep, models, x, table, common), importances=r == 0)
    del x
    # compared as written (6 significant digits, as the CNN's metrics.tsv), so a fold on
    # which the two score the same is a tie, and the table can be redone from the files
    metrics = [_read(rep.layout.baselines("metrics")) for rep in runs]
    for m in models:  # the options that made each model's rows
        options = {"model": m, "features": None if features is None else str(features)}
        options.update(random_state=random_state, inner_folds=inner_folds)
        write_stage(run.layout.stage_record(f"baseline-{m}"), f"baseline-{m}", options)
    return _compare(runs, metrics)
