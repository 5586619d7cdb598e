"""Cross-validated training of a run: cohort -> cache -> folds -> fold models -> metrics.

:func:`train_run` is the one public verb. It writes the run folder documented in
``DESIGN.md``::

    <out>/config.yaml        the resolved configuration (``--config`` replays it)
    <out>/cohort.tsv         one row per scan: subject, session, label, y, source path, cache slot
    <out>/folds.tsv          one row per (fold, scan): role train / val / test
    <out>/fold-<k>/model.pt  state_dict + metadata (loaded with weights_only=True)
    <out>/fold-<k>/predictions.tsv, history.tsv
    <out>/predictions.tsv    out-of-fold predictions of every scan
    <out>/metrics.tsv        per-fold metrics, then mean and std rows

A fold whose ``model.pt`` exists is not trained again, so an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainmaps import __version__
from brainmaps.data.cache import CachedVolumes, cache_volumes
from brainmaps.data.cohort import Cohort, load_cohort
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.training.checkpoints import save_checkpoint
from brainmaps.training.config import RunConfig, load_config
from brainmaps.training.cross_validation import (
    check_class_counts,
    inner_split,
    make_folds,
    read_folds,
)
from brainmaps.training.loop import predict_volumes, train_model
from brainmaps.training.metrics import (
    classification_metrics,
    regression_metrics,
    summarize_folds,
)
from brainmaps.utils import atomic_path

__all__ = ["RunResult", "load_run_cohort", "train_run"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`train_run` produced.

    Attributes
    ----------
    out : pathlib.Path
        The run folder.
    metrics : pandas.DataFrame
        Per-fold metrics followed by ``mean`` and ``std`` rows (as in ``metrics.tsv``).
    predictions : pandas.DataFrame
        Out-of-fold predictions (as in ``predictions.tsv``).
    resumed_folds : list of int
        Folds that were found finished and not trained again.
    """

    out: Path
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    resumed_folds: list[int]


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _check_run_folder(config: RunConfig, out: Path) -> None:
    """Refuse to mix two different configurations in one run folder."""
    existing = out / "config.yaml"
    if not existing.exists():
        return
    old = load_config(existing).to_dict()
    new = config.to_dict()
    diffs = [
        f"{section}.{key}"
        for section in ("data", "preprocess", "model", "training")
        for key in set(old[section]) | set(new[section])
        if old[section].get(key) != new[section].get(key)
    ]
    if diffs:
        raise ConfigError(
            f"run folder {out} already holds a run with another configuration "
            f"(differs in {', '.join(sorted(diffs))}); choose a new --out, or delete the "
            "folder to start again."
        )


def load_run_cohort(config: RunConfig) -> Cohort:
    """Load the cohort a configuration points at (paths relative to the working dir)."""
    d = config.data
    return load_cohort(
        d.source,
        d.target,
        subject_col=d.subject_col,
        path_col=d.path_col,
        suffix=d.suffix,
        task=d.task,
        drop_missing=d.drop_missing,
    )


def _assign_folds(config: RunConfig, cohort: Cohort) -> np.ndarray:
    t = config.training
    subjects = cohort.subjects
    if t.folds_file:
        return _read_user_folds(Path(t.folds_file), subjects)
    if cohort.task == "classification":
        check_class_counts(cohort.labels, t.folds, classes=cohort.classes, subjects=subjects)
    return make_folds(subjects, cohort.labels, n_folds=t.folds, seed=t.seed, task=cohort.task)


def _read_user_folds(path: Path, subjects: np.ndarray) -> np.ndarray:
    """Fold of every scan from a user split (``sub-`` prefixes are optional)."""
    table = read_folds(path)
    mapping = dict(zip(table["subject"].str.removeprefix("sub-"), table["fold"], strict=True))
    absent = [s for s in subjects if s.removeprefix("sub-") not in mapping]
    if absent:
        raise ConfigError(
            f"folds file {path} has no fold for {len(absent)} subject(s) "
            f"(e.g. {', '.join(absent[:5])}); add a row for every subject of the cohort."
        )
    codes, folds = np.unique(
        [mapping[s.removeprefix("sub-")] for s in subjects], return_inverse=True
    )
    if len(codes) < 2:
        raise ConfigError(f"folds file {path} defines a single fold; cross-validation needs >= 2.")
    return folds.astype(int)


def _fold_roles(config: RunConfig, cohort: Cohort, folds: np.ndarray) -> pd.DataFrame:
    """Long table of (fold, scan) roles: train / val / test."""
    rows = []
    base = cohort.table[["subject", "session"]]
    for k in range(int(folds.max()) + 1):
        role = np.where(folds == k, "test", "train").astype(object)
        train_idx = np.flatnonzero(folds != k)
        if config.training.val_fraction > 0:
            _, val_rel = inner_split(
                cohort.subjects[train_idx],
                cohort.labels[train_idx],
                val_fraction=config.training.val_fraction,
                seed=config.training.seed + k,
                task=cohort.task,
            )
            role[train_idx[val_rel]] = "val"
        rows.append(base.assign(fold=k, role=role))
    return pd.concat(rows, ignore_index=True)[["fold", "subject", "session", "role"]]


def _prepare(config: RunConfig, out: Path, progress: bool) -> tuple:
    cohort = load_run_cohort(config)
    volumes = cache_volumes(
        cohort.table["path"].tolist(),
        config.preprocess,
        config.training.resolved_cache_dir(),
        n_jobs=config.training.n_jobs,
        progress=progress,
    )
    folds = _assign_folds(config, cohort)
    roles = _fold_roles(config, cohort, folds)
    table = cohort.table.assign(cache_slot=volumes.slots, test_fold=folds)
    config.to_yaml(out / "config.yaml")
    _write_tsv(table, out / "cohort.tsv")
    _write_tsv(roles, out / "folds.tsv")
    return cohort, volumes, roles


def _metadata(config: RunConfig, cohort: Cohort, model_config: dict, fold: int) -> dict:
    grid = config.preprocess.grid
    return {
        "brainmaps_version": __version__,
        "model": config.model.name,
        "model_config": model_config,
        "task": cohort.task,
        "target": cohort.target,
        "classes": list(cohort.classes),
        "grid_shape": list(grid.shape),
        "grid_affine": np.asarray(grid.affine).tolist(),
        "preprocess": config.preprocess.to_dict(),
        "fold": fold,
        "seed": config.training.seed,
    }


def _n_outputs(cohort: Cohort) -> int:
    return len(cohort.classes) if cohort.task == "classification" else 1


def _train_fold(
    config: RunConfig,
    cohort: Cohort,
    volumes: CachedVolumes,
    roles: pd.DataFrame,
    k: int,
    progress: bool,
) -> None:
    t = config.training
    fold_roles = roles.loc[roles["fold"] == k, "role"].to_numpy()
    train_idx = np.flatnonzero(fold_roles == "train")
    val_idx = np.flatnonzero(fold_roles == "val")
    test_idx = np.flatnonzero(fold_roles == "test")
    model_config = {
        "in_channels": 1,
        "n_classes": _n_outputs(cohort),
        "input_shape": list(config.preprocess.grid_shape),
        **config.model.options,
    }
    torch.manual_seed(t.seed + k)
    model = create_model(config.model.name, **model_config)
    start = time.perf_counter()
    result = train_model(
        model,
        volumes,
        cohort.labels,
        train_idx,
        val_idx,
        task=cohort.task,
        epochs=t.epochs,
        lr=t.lr,
        batch_size=t.batch_size,
        seed=t.seed + k,
        device=t.device,
        amp=t.amp,
        progress=progress,
        num_workers=t.num_workers,
        desc=f"fold {k + 1}/{int(roles['fold'].max()) + 1}",
    )
    model.load_state_dict(result.state_dict)
    outputs = predict_volumes(
        model,
        volumes,
        test_idx,
        batch_size=t.batch_size,
        device=t.device,
        task=cohort.task,
        target_stats=getattr(result, "target_stats", None),
    )
    fold_dir = Path(config.out) / f"fold-{k}"
    _write_tsv(_prediction_frame(cohort, test_idx, outputs, k), fold_dir / "predictions.tsv")
    _write_tsv(result.history, fold_dir / "history.tsv")
    meta = _metadata(config, cohort, model_config, k)
    meta["best_epoch"] = int(result.best_epoch)
    meta["train_seconds"] = round(time.perf_counter() - start, 3)
    if getattr(result, "target_stats", None) is not None:
        meta["target_stats"] = [float(v) for v in result.target_stats]
    save_checkpoint(fold_dir / "model.pt", result.state_dict, meta)  # written last: fold done


def _prediction_frame(cohort: Cohort, idx: np.ndarray, outputs: np.ndarray, k: int):
    rows = cohort.table.iloc[idx][["subject", "session", "label", "y"]].reset_index(drop=True)
    rows.insert(0, "fold", k)
    if cohort.task == "regression":
        return rows.assign(prediction=np.asarray(outputs, dtype=float).ravel())
    probs = pd.DataFrame(outputs, columns=[f"p_{c}" for c in cohort.classes])
    pred = np.asarray(cohort.classes, dtype=object)[outputs.argmax(axis=1)]
    return pd.concat([rows, probs], axis=1).assign(predicted=pred)


def _fold_metrics(cohort: Cohort, predictions: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for k, part in predictions.groupby("fold", sort=True):
        if cohort.task == "regression":
            m = regression_metrics(part["y"].to_numpy(), part["prediction"].to_numpy())
        else:
            proba = part[[f"p_{c}" for c in cohort.classes]].to_numpy()
            m = classification_metrics(part["y"].to_numpy().astype(int), proba)
        rows.append({"fold": str(k), "n_test": len(part), **m})
    return summarize_folds(pd.DataFrame(rows))


def train_run(config: RunConfig, *, progress: bool = True) -> RunResult:
    """Train and cross-validate a model, writing the run folder.

    Each outer fold trains a fresh model on the other folds (minus an inner validation
    split that picks the best epoch) and predicts its own subjects, so every subject gets
    one out-of-fold prediction. Folds already finished in ``config.out`` are skipped.

    Parameters
    ----------
    config : RunConfig
        The resolved configuration (``RunConfig.from_dict`` or :func:`load_config`).
    progress : bool
        Show progress bars.

    Returns
    -------
    RunResult

    Raises
    ------
    BrainmapsError
        For bad input: unreadable images, bad labels, a class smaller than the fold count,
        a leaking user split, or a run folder that holds another configuration.
    """
    out = Path(config.out)
    _check_run_folder(config, out)
    out.mkdir(parents=True, exist_ok=True)
    cohort, volumes, roles = _prepare(config, out, progress)
    n_folds = int(roles["fold"].max()) + 1
    resumed = []
    for k in range(n_folds):
        if (out / f"fold-{k}" / "model.pt").exists():
            resumed.append(k)
            continue
        _train_fold(config, cohort, volumes, roles, k, progress)
    predictions = pd.concat(
        [
            pd.read_csv(
                out / f"fold-{k}" / "predictions.tsv",
                sep="\t",
                dtype={"subject": str, "session": str, "label": str},
                keep_default_na=False,
            )
            for k in range(n_folds)
        ],
        ignore_index=True,
    )
    metrics = _fold_metrics(cohort, predictions)
    _write_tsv(predictions, out / "predictions.tsv")
    _write_tsv(metrics, out / "metrics.tsv")
    return RunResult(out=out, metrics=metrics, predictions=predictions, resumed_folds=resumed)
