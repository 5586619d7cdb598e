"""One outer fold of a run: its model(s) trained, its test subjects predicted.

With ``training.ensemble = N > 1`` the fold trains N members on the same subjects with
different seeds (member 0 with the fold's own seed, so a one-member run is unchanged);
each member's checkpoint and predictions are kept (``fold-<k>/member-<j>/``; member 0's
checkpoint is ``fold-<k>/model.pt``, the fold model every other step uses), and the fold's
``predictions.tsv`` is their mean with their spread. A killed run resumes member by
member. Regression folds also get the age-bias line fitted on their inner validation
predictions (:mod:`brainmaps.evaluation.bias`; the members' mean for an ensemble).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from brainmaps import __version__
from brainmaps.data.cache import CachedVolumes
from brainmaps.data.cohort import Cohort
from brainmaps.evaluation.bias import apply_bias, fit_bias
from brainmaps.exceptions import BrainmapsError, BrainmapsWarning
from brainmaps.models import create_model, get_model_class
from brainmaps.models.checkpoints import load_checkpoint, save_checkpoint
from brainmaps.models.predict import predict_volumes
from brainmaps.run.config import RunConfig
from brainmaps.run.layout import RunLayout
from brainmaps.tasks import Task, get_task
from brainmaps.training.loop import train_model
from brainmaps.utils import write_tsv

__all__ = [
    "MEMBER_SEED_STEP",
    "TrainingDivergedError",
    "fitted_model_config",
    "member_done",
    "train_fold",
]

#: Member ``j`` of fold ``k`` is seeded with ``seed + k + MEMBER_SEED_STEP * j``.
MEMBER_SEED_STEP = 1000


class TrainingDivergedError(BrainmapsError):
    """The training loss of a fold stopped being finite."""


def fold_task(cohort: Cohort) -> Task:
    """The task object of a cohort."""
    return get_task(cohort.task, cohort.classes)


def model_config(config: RunConfig, cohort: Cohort, in_channels: int) -> dict:
    """The keyword arguments the run's network is built with."""
    return {
        "in_channels": in_channels,
        "n_classes": fold_task(cohort).n_outputs,
        "input_shape": list(config.preprocess.grid_shape),
        **config.model.options,
    }


def fitted_model_config(
    config: RunConfig, cohort: Cohort, in_channels: int, train_idx: np.ndarray
) -> dict:
    """:func:`model_config` fitted to a fold's training targets, where the model needs it.

    A model class with a ``fit_config(config, targets)`` classmethod (SFCN, for its
    ``soft_bins``) derives options from the targets of ``train_idx`` (the fold's training
    subjects, never its validation or test subjects); the result is what the fold's
    checkpoint records.
    """
    net_config = model_config(config, cohort, in_channels)
    fit = getattr(get_model_class(config.model.name), "fit_config", None)
    if fit is None:
        return net_config
    return fit(net_config, np.asarray(cohort.labels)[np.asarray(train_idx, dtype=np.int64)])


def in_channels(volumes: CachedVolumes) -> int:
    """Input channels of the cached volumes."""
    shape = np.shape(volumes[0]) if len(volumes) else ()
    return int(shape[0]) if len(shape) == 4 else 1


def _metadata(config: RunConfig, cohort: Cohort, net_config: dict, fold: int) -> dict:
    grid = config.preprocess.grid
    return {
        "brainmaps_version": __version__,
        "model": config.model.name,
        "model_config": net_config,
        "task": cohort.task,
        "target": cohort.target,
        "classes": list(cohort.classes),
        "grid_shape": list(grid.shape),
        "grid_affine": np.asarray(grid.affine).tolist(),
        "preprocess": config.preprocess.to_dict(),
        "fold": fold,
        "seed": config.training.seed,
    }


@dataclass
class _Member:
    """One trained member: its outputs on the fold's test (and validation) subjects."""

    test: np.ndarray
    val: np.ndarray | None
    target_stats: tuple | None


def _check_finite(history: pd.DataFrame, k: int, lr: float) -> None:
    bad = history.loc[~np.isfinite(history["train_loss"].to_numpy(dtype=float)), "epoch"]
    if len(bad):
        raise TrainingDivergedError(
            f"fold {k}: the training loss is not finite from epoch {int(bad.iloc[0])} on; "
            f"training diverged. Lower the learning rate (--lr, now {lr:g}) and run the same "
            "command again (finished folds are kept)."
        )


def _predict(config, cohort, model, volumes, idx, target_stats) -> np.ndarray:
    return predict_volumes(
        model,
        volumes,
        idx,
        batch_size=config.training.batch_size,
        device=config.execution.device,
        task=fold_task(cohort),
        target_stats=target_stats,
    )


def _train_member(config, cohort, volumes, roles, k, j, layout, plan, idx) -> tuple:
    """Train member ``j`` of fold ``k``; write its history (and, in an ensemble, its
    predictions). Returns the member's outputs, state_dict and checkpoint metadata."""
    t, execution = config.training, config.execution
    train_idx, val_idx, test_idx = idx
    net_config = fitted_model_config(config, cohort, in_channels(volumes), train_idx)
    seed = t.seed + k + MEMBER_SEED_STEP * j
    torch.manual_seed(seed)
    model = create_model(config.model.name, **net_config)
    transfer = plan.apply(model, k) if plan is not None else None
    start = time.perf_counter()
    n_folds = int(roles["fold"].max()) + 1
    member = f", member {j + 1}/{t.ensemble}" if t.ensemble > 1 else ""
    result = train_model(
        model, volumes, cohort.labels, train_idx, val_idx, task=fold_task(cohort),
        epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, seed=seed, device=execution.device,
        amp=t.amp, bn_recalibration=t.bn_recalibration, progress=execution.progress,
        num_workers=execution.num_workers, desc=f"fold {k + 1}/{n_folds}{member}",
    )  # fmt: skip
    _check_finite(result.history, k, t.lr)
    model.load_state_dict(result.state_dict)
    test = _predict(config, cohort, model, volumes, test_idx, result.target_stats)
    if not np.all(np.isfinite(test)):
        raise TrainingDivergedError(
            f"fold {k}: the trained model predicts non-finite values; training diverged. "
            f"Lower the learning rate (--lr, now {t.lr:g}) and run the same command again."
        )
    regression = not fold_task(cohort).is_classification
    val = None
    if regression and len(val_idx):
        val = _predict(config, cohort, model, volumes, val_idx, result.target_stats)
    meta = _metadata(config, cohort, net_config, k)
    meta.update(
        best_epoch=int(result.best_epoch), train_seconds=round(time.perf_counter() - start, 3)
    )
    if t.ensemble > 1:
        meta.update(member=j, ensemble=t.ensemble, member_seed=seed)
    if transfer is not None:
        meta["transfer"] = transfer
    if result.target_stats is not None:
        meta["target_stats"] = [float(v) for v in result.target_stats]
    write_tsv(result.history, layout.member_history(k, j))
    if t.ensemble > 1:
        rows = [prediction_frame(cohort, test_idx, test, k).assign(role="test")]
        if val is not None:
            rows.append(prediction_frame(cohort, val_idx, val, k).assign(role="val"))
        write_tsv(pd.concat(rows, ignore_index=True), layout.member_predictions(k, j))
    return _Member(test, val, result.target_stats), result.state_dict, meta


def member_done(layout: RunLayout, k: int, j: int) -> bool:
    """Whether member ``j`` of an ensemble's fold ``k`` has a loadable checkpoint and its
    predictions."""
    try:
        load_checkpoint(layout.member_checkpoint(k, j))
        return layout.member_predictions(k, j).is_file()
    except BrainmapsError:
        return False


def _read_member(layout: RunLayout, cohort: Cohort, k: int, j: int) -> _Member:
    frame = pd.read_csv(layout.member_predictions(k, j), sep="\t", dtype={"subject": str})
    task = fold_task(cohort)
    test = task.outputs_from_frame(frame[frame["role"] == "test"]).astype(np.float32)
    val_rows = frame[frame["role"] == "val"]
    val = task.outputs_from_frame(val_rows).astype(np.float32) if len(val_rows) else None
    stats = load_checkpoint(layout.member_checkpoint(k, j))[1].get("target_stats")
    return _Member(test, val, tuple(stats) if stats else None)


def prediction_frame(cohort: Cohort, idx: np.ndarray, outputs: np.ndarray, k: int):
    """The test predictions table of fold ``k`` for cohort rows ``idx``."""
    rows = cohort.table.iloc[idx][["subject", "session", "label", "y"]].reset_index(drop=True)
    rows.insert(0, "fold", k)
    return fold_task(cohort).prediction_frame(rows, outputs)


def _bias_line(cohort, y_val: np.ndarray, val: np.ndarray | None, k: int, n_val: int):
    """The bias line on the validation predictions (None without them)."""
    line = fit_bias(y_val, val) if val is not None else None
    if line is None:
        return None
    if line[1] < 0.2:
        warnings.warn(
            f"fold {k}: the validation predictions hardly follow the target (slope "
            f"{line[1]:.2f} of prediction on target): the model has learnt little of it, and "
            "the bias-corrected predictions mostly give back the true values; do not read "
            "their MAE as accuracy.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return {"intercept": line[0], "slope": line[1], "n_val": n_val}


def with_bias(frame: pd.DataFrame, bias: dict | None, target_stats) -> pd.DataFrame:
    """Regression test predictions with ``gap``, ``prediction_corrected``, ``gap_corrected``
    (NaN without a fitted line) and ``train_mean`` (the predict-the-mean baseline)."""
    y = frame["y"].to_numpy(dtype=float)
    pred = frame["prediction"].to_numpy(dtype=float)
    corrected = (
        apply_bias(y, pred, bias["intercept"], bias["slope"])
        if bias is not None
        else np.full(len(frame), np.nan)
    )
    mean = float(target_stats[0]) if target_stats is not None else np.nan
    return frame.assign(
        gap=pred - y, prediction_corrected=corrected, gap_corrected=corrected - y, train_mean=mean
    )


def _spread(frame: pd.DataFrame, task: Task, stacked: np.ndarray) -> pd.DataFrame:
    """The members' spread: ``std_<class>`` or ``prediction_std``."""
    std = stacked.std(axis=0)
    if task.is_classification:
        return frame.assign(**{f"std_{c}": std[:, i] for i, c in enumerate(task.classes)})
    return frame.assign(prediction_std=std.ravel())


def train_fold(config, cohort, volumes, roles, k: int, layout: RunLayout, plan=None) -> None:
    """Train fold ``k`` (all its members), then write its predictions and member 0's
    checkpoint, which marks the fold done."""
    t = config.training
    fold_roles = roles.loc[roles["fold"] == k, "role"].to_numpy()
    idx = tuple(np.flatnonzero(fold_roles == r) for r in ("train", "val", "test"))
    task = fold_task(cohort)
    members, first = [], None
    for j in range(t.ensemble):
        if t.ensemble > 1 and member_done(layout, k, j):  # resumed member by member
            members.append(_read_member(layout, cohort, k, j))
            continue
        member, state, meta = _train_member(config, cohort, volumes, roles, k, j, layout, plan, idx)
        members.append(member)
        if t.ensemble > 1:  # fold-k/model.pt for member 0: the fold is done only with its
            save_checkpoint(layout.member_checkpoint(k, j), state, meta)  # predictions.tsv
        if j == 0:
            first = (state, meta)
    if first is None:
        first = load_checkpoint(layout.checkpoint(k))
    stacked = np.stack([m.test for m in members])
    frame = prediction_frame(cohort, idx[2], stacked.mean(axis=0), k)
    bias = None
    if not task.is_classification:
        vals = [m.val for m in members]
        val = np.mean(np.stack(vals), axis=0) if all(v is not None for v in vals) else None
        bias = _bias_line(cohort, cohort.labels[idx[1]], val, k, len(idx[1]))
        frame = with_bias(frame, bias, members[0].target_stats)
    if t.ensemble > 1:
        frame = _spread(frame, task, stacked)
    state, meta = first
    if bias is not None:
        meta["bias"] = bias
    write_tsv(frame, layout.fold_predictions(k))
    save_checkpoint(layout.checkpoint(k), state, meta)  # written last: the fold is done
