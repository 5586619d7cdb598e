"""Cross-validated training of a run: cohort -> cache -> folds -> fold models -> metrics.

:func:`train_run` is the one public verb. It writes the run folder documented in
``DESIGN.md`` (every path comes from :class:`~brainmaps.run.layout.RunLayout`):
``config.yaml``, ``execution.yaml``, ``cohort.tsv``, ``folds.tsv``, per fold
``model.pt``, ``predictions.tsv`` and ``history.tsv``, then the out-of-fold
``predictions.tsv`` and ``metrics.tsv``. With ``training.repeats = R > 1`` the split is
drawn R times (:mod:`brainmaps.training.repeats`): repeat 0 is the run's own split, written
as above and first; every other repeat ``r`` gets the same files under
``repeats/repeat-<r>/``, and ``metrics_repeats.tsv`` pools the R x k folds.

Everything is validated (cohort, labels, folds, grid, model) before the first file is
written; the run folder is locked while it is written, so a second ``train`` on the same
folder fails with a clear error. A fold counts as done only when its checkpoint loads and
its predictions are complete and finite, so an interrupted or broken fold is trained
again on resume; a fold whose training loss stops being finite fails with a clear error
and leaves nothing that looks finished.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from brainmaps.data.cohort import Cohort, load_cohort
from brainmaps.data.stacked import cache_channels, slot_columns
from brainmaps.evaluation.bias import bias_metrics
from brainmaps.evaluation.metrics import summarize_folds, task_metrics
from brainmaps.evaluation.sites import make_site_folds
from brainmaps.evaluation.splitters import (
    check_class_counts,
    inner_split,
    make_folds,
    read_folds,
)
from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.models import create_model
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.run.config import RunConfig, load_config
from brainmaps.run.folder import write_execution
from brainmaps.run.layout import RunLayout
from brainmaps.run.lock import run_lock
from brainmaps.training.fold import (
    TrainingDivergedError,
    fitted_model_config,
    fold_task,
    member_done,
    train_fold,
)
from brainmaps.training.repeats import (
    check_repeats,
    pooled_repeat_metrics,
    repeat_config,
    warn_same_splits,
)
from brainmaps.training.transfer import plan_transfer, with_transfer_head
from brainmaps.utils import write_tsv

__all__ = ["RunResult", "TrainingDivergedError", "load_run_cohort", "train_run"]

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
        Folds (of repeat 0) that were found finished and not trained again.
    repeat_metrics : pandas.DataFrame or None
        Repeated CV (``training.repeats > 1``): one row per (repeat, fold), then ``mean``
        and ``std`` over all of them (as in ``metrics_repeats.tsv``); None otherwise.
    resumed_repeat_folds : list of tuple of int
        ``(repeat, fold)`` of the repeats r > 0 found finished and not trained again.
    """

    out: Path
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    resumed_folds: list[int]
    repeat_metrics: pd.DataFrame | None = None
    resumed_repeat_folds: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Repeat:
    """One draw of the outer split: its configuration (seed), test fold of every scan,
    roles, layout and transfer plan."""

    index: int
    config: RunConfig
    folds: np.ndarray
    roles: pd.DataFrame
    layout: RunLayout
    plan: object = None


def _check_run_folder(config: RunConfig, layout: RunLayout) -> None:
    """Refuse to mix two different configurations in one run folder."""
    if not layout.config.exists():
        return
    diffs = config.differences(load_config(layout.config))
    if diffs:
        raise ConfigError(
            f"run folder {layout.root} already holds a run with another configuration "
            f"(differs in {', '.join(diffs)}); choose a new --out, or delete the "
            "folder to start again."
        )


def _check_out(layout: RunLayout) -> None:
    """``--out`` must be a folder (or creatable as one)."""
    for parent in (layout.root, *layout.root.parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(
                f"--out {layout.root}: {parent} is a file, not a folder; choose another "
                "--out (a new or existing folder)."
            )
        if parent.exists():
            return


def load_run_cohort(config: RunConfig) -> Cohort:
    """Load the cohort a configuration points at."""
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


_task = fold_task


def _assign_folds(config: RunConfig, cohort: Cohort) -> np.ndarray:
    t = config.training
    subjects = cohort.subjects
    if t.folds_file:
        return _read_user_folds(Path(t.folds_file), subjects)
    if t.cv in ("leave-sites-out", "leave-one-site-out"):
        n_folds = t.folds if t.cv == "leave-sites-out" else None
        sites = cohort.table["site"].to_numpy(dtype=str)
        return make_site_folds(subjects, sites, cohort.labels, n_folds, t.seed, task=cohort.task)
    if _task(cohort).is_classification:
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


def _train_idx(roles: pd.DataFrame, k: int) -> np.ndarray:
    return np.flatnonzero(roles.loc[roles["fold"] == k, "role"].to_numpy() == "train")


def _fitted_configs(config: RunConfig, cohort: Cohort, roles: pd.DataFrame, n_channels: int):
    """Every fold's network options, fitted to its training targets (SFCN's soft bins)."""
    n_folds = int(roles["fold"].max()) + 1
    return [
        fitted_model_config(config, cohort, n_channels, _train_idx(roles, k))
        for k in range(n_folds)
    ]


def _check_model(config: RunConfig, cohort: Cohort, roles: pd.DataFrame) -> None:
    """Build the network once on the meta device, so a bad model/grid fails before writing
    (options fitted to the training targets are checked for every fold)."""
    try:
        fitted = _fitted_configs(config, cohort, roles, 1)
        with torch.device("meta"):
            create_model(config.model.name, **fitted[0])
    except BrainmapsError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"model {config.model.name!r} cannot be built for grid "
            f"{'x'.join(map(str, config.preprocess.grid_shape))} with options "
            f"{config.model.options}: {exc}"
        ) from None


def _repeats(config: RunConfig, cohort: Cohort, layout: RunLayout) -> list[_Repeat]:
    """Every repeat's split (repeat 0: the run's own), validated, nothing written."""
    check_repeats(config)
    repeats = []
    for r in range(config.training.repeats):
        cfg = repeat_config(config, r)
        folds = _assign_folds(cfg, cohort)
        repeats.append(_Repeat(r, cfg, folds, _fold_roles(cfg, cohort, folds), layout.repeat(r)))
    warn_same_splits([rep.roles for rep in repeats])
    return repeats


def _prepare(config: RunConfig, layout: RunLayout) -> tuple:
    """Validate everything, then write config, cohort and folds (nothing written before)."""
    execution = config.execution
    cohort = load_run_cohort(config)
    repeats = _repeats(config, cohort, layout)
    _check_model(config, cohort, repeats[0].roles)
    n_channels = max(len(cohort.channels), 1)
    for rep in repeats:  # a transfer source's subjects are checked against every split
        fitted = fitted_model_config(rep.config, cohort, n_channels, _train_idx(rep.roles, 0))
        rep.plan = plan_transfer(rep.config, cohort.classes, cohort.task, rep.roles, fitted)
    _check_run_folder(config, layout)
    volumes = cache_channels(
        cohort.table,
        cohort.channels,
        config.preprocess,
        execution.resolved_cache_dir(),
        n_jobs=execution.n_jobs,
        progress=execution.progress,
    )
    table = cohort.table.assign(**slot_columns(volumes), test_fold=repeats[0].folds)
    config.to_yaml(layout.config)
    write_execution(layout, execution)
    write_tsv(table, layout.cohort)
    for rep in repeats:
        write_tsv(rep.roles, rep.layout.folds)
    return cohort, volumes, repeats


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        sep="\t",
        dtype={"subject": str, "session": str, "label": str},
        keep_default_na=False,
    )


def _fold_done(layout: RunLayout, k: int, cohort: Cohort, roles: pd.DataFrame, ensemble=1) -> bool:
    """A fold is done when its checkpoint loads and its predictions are complete and finite."""
    if not layout.checkpoint(k).is_file() or not layout.fold_predictions(k).is_file():
        return False
    try:
        load_checkpoint(layout.checkpoint(k))
        frame = _read_predictions(layout.fold_predictions(k))
        values = _task(cohort).outputs_from_frame(frame).astype(float)
    except (BrainmapsError, KeyError, ValueError, OSError):
        return False
    n_test = int(((roles["fold"] == k) & (roles["role"] == "test")).sum())
    members = range(1, int(ensemble))  # an ensemble's fold is done with all its members
    return (
        len(frame) == n_test
        and bool(np.all(np.isfinite(values)))
        and all(member_done(layout, k, j) for j in members)
    )


def _site_metrics(cohort: Cohort, predictions: pd.DataFrame) -> pd.DataFrame | None:
    """Metrics per fold and test site (``None`` for a cohort with fewer than two sites).

    A site whose test subjects are all of one class has no ROC AUC (NaN).
    """
    sites = cohort.table[["subject", "session", "site"]].astype(str)
    if sites["site"].replace("", np.nan).nunique() < 2:
        return None
    task = _task(cohort)
    keyed = predictions.assign(
        subject=predictions["subject"].astype(str),
        session=predictions["session"].fillna("").astype(str),
    ).merge(sites, on=["subject", "session"], how="left")
    rows = []
    for (k, site), part in keyed.groupby(["fold", "site"], sort=True):
        with warnings.catch_warnings():  # one class at a site: metrics say NaN
            warnings.simplefilter("ignore")
            m = task_metrics(task, part["y"].to_numpy(), task.outputs_from_frame(part))
        rows.append({"fold": int(k), "site": site, "n_test": len(part), **m})
    return pd.DataFrame(rows)


#: Columns the bias correction adds to a regression run's predictions (NaN when no line).
_BIAS_COLUMNS = ("gap", "prediction_corrected", "gap_corrected", "train_mean")


def _fold_metrics(cohort: Cohort, predictions: pd.DataFrame) -> pd.DataFrame:
    task = _task(cohort)
    rows = []
    for k, part in predictions.groupby("fold", sort=True):
        m = task_metrics(task, part["y"].to_numpy(), task.outputs_from_frame(part))
        if "prediction_corrected" in part:  # regression runs since the bias correction
            num = {c: pd.to_numeric(part[c], errors="coerce") for c in _BIAS_COLUMNS if c in part}
            mean = num["train_mean"].iloc[0] if "train_mean" in num else None
            m.update(bias_metrics(part["y"], part["prediction"], num["prediction_corrected"], mean))
        rows.append({"fold": str(k), "n_test": len(part), **m})
    return summarize_folds(pd.DataFrame(rows))


def train_run(config: RunConfig, *, progress: bool | None = None) -> RunResult:
    """Train and cross-validate a model, writing the run folder.

    Each outer fold trains a fresh model on the other folds (minus an inner validation
    split that picks the best epoch) and predicts its own subjects, so every subject gets
    one out-of-fold prediction. Folds already finished in ``config.out`` are skipped.
    With ``training.repeats = R > 1`` the whole cross-validation is repeated on R - 1
    more splits (:mod:`brainmaps.training.repeats`), written under
    ``repeats/repeat-<r>/``; ``metrics.tsv`` and ``predictions.tsv`` stay repeat 0's and
    ``metrics_repeats.tsv`` pools all R x k folds.

    Parameters
    ----------
    config : RunConfig
        The configuration (``RunConfig.from_dict`` or :func:`load_config`); relative
        paths are made absolute before ``config.yaml`` is written.
    progress : bool, optional
        Show progress bars (default: ``config.execution.progress``).

    Returns
    -------
    RunResult

    Raises
    ------
    BrainmapsError
        For bad input: unreadable images, bad labels, a class smaller than the fold count,
        a leaking user split, a model that does not fit the grid, a run folder that holds
        another configuration or that another process is writing, a diverging fold,
        ``repeats > 1`` with a split no seed changes (a folds file, leave-one-site-out).
    """
    config = with_transfer_head(config.resolved())
    if progress is not None:
        config = config.replace(execution=replace(config.execution, progress=bool(progress)))
    layout = RunLayout(config.out)
    _check_out(layout)
    with run_lock(layout.lock, "brainmaps train"):
        cohort, volumes, repeats = _prepare(config, layout)
        done, results = [], []
        for rep in repeats:  # repeat 0 first: its tables are written before the others train
            done.append(_train_repeat(rep, cohort, volumes, config.training.ensemble))
            results.append(_write_repeat(rep, cohort))
        metrics, predictions = results[0]
        per_site = _site_metrics(cohort, predictions)
        if per_site is not None:
            write_tsv(per_site, layout.metrics_sites)
        pooled = None
        if len(repeats) > 1:
            pooled = pooled_repeat_metrics([m for m, _ in results])
            write_tsv(pooled, layout.metrics_repeats)
    return RunResult(
        out=layout.root,
        metrics=metrics,
        predictions=predictions,
        resumed_folds=done[0],
        repeat_metrics=pooled,
        resumed_repeat_folds=[(r, k) for r, folds in enumerate(done) if r for k in folds],
    )


def _train_repeat(rep: _Repeat, cohort: Cohort, volumes, ensemble: int) -> list[int]:
    """Train the folds of one repeat not yet done; returns the folds found done."""
    n_folds = int(rep.roles["fold"].max()) + 1
    resumed = []
    for k in range(n_folds):
        if _fold_done(rep.layout, k, cohort, rep.roles, ensemble):
            resumed.append(k)
            continue
        if rep.index:
            log.info("repeat %d (seed %d), fold %d", rep.index, rep.config.training.seed, k)
        train_fold(rep.config, cohort, volumes, rep.roles, k, rep.layout, rep.plan)
    return resumed


def _write_repeat(rep: _Repeat, cohort: Cohort) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A repeat's out-of-fold ``predictions.tsv`` and ``metrics.tsv`` (repeat 0: the run's)."""
    n_folds = int(rep.roles["fold"].max()) + 1
    predictions = pd.concat(
        [_read_predictions(rep.layout.fold_predictions(k)) for k in range(n_folds)],
        ignore_index=True,
    )
    metrics = _fold_metrics(cohort, predictions)
    write_tsv(predictions, rep.layout.predictions)
    write_tsv(metrics, rep.layout.metrics)
    return metrics, predictions
