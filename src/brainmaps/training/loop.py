"""Train one model on a fold and predict with it.

Follows Kan et al.: Adam (lr 3e-4), cross-entropy, the epoch with the lowest validation
loss is kept. Before each validation, the BatchNorm running statistics are recomputed
over the training volumes ("precise BN"), so the validation loss measures, and the
kept state holds, the model that predicts in eval mode. Volumes are read one batch at
a time from any indexable store (a memory-mapped cache, a list of arrays), never
stacked in memory. On the CPU, the same seed gives the same weights and history; on
CUDA, mixed precision is used when asked.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from brainmaps.exceptions import BrainmapsWarning, ConfigError, DataLeakageError
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import VolumeDataset, check_indices
from brainmaps.tasks import Task, get_task, target_stats

__all__ = ["TrainResult", "train_model"]


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    state_dict : dict
        CPU copy of the weights of the best epoch (lowest validation loss, the earlier
        on ties; the last epoch without a validation set), with its BatchNorm running
        statistics recomputed over the training volumes when ``bn_recalibration``.
    best_epoch : int
        1-based epoch of ``state_dict``, as in ``history["epoch"]``.
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``
        (classification) or ``val_mae`` (regression, in target units), ``seconds``.
    target_stats : tuple of float or None
        ``(mean, std)`` of the training targets used to standardise regression targets;
        pass it to :func:`predict_volumes` to get predictions in target units.
    task : Task
    """

    state_dict: dict
    best_epoch: int
    history: pd.DataFrame
    target_stats: tuple[float, float] | None = None
    task: Task | str = "classification"


def _prepare_targets(targets, train_idx, task: Task):
    """Return (targets as float/int array, target_stats)."""
    targets = np.asarray(targets)
    if not task.is_classification:
        values = targets.astype(np.float64)
        train = values[train_idx]
        if not np.all(np.isfinite(train)):
            raise ConfigError("regression targets hold NaN or infinite values; drop those rows.")
        stats = target_stats(train)
        return ((values - stats[0]) / stats[1]).astype(np.float32), stats
    if targets.dtype.kind not in "iub" and not np.all(targets == np.round(targets)):
        raise ConfigError(
            "classification targets must be integer class indices, got non-integer values; "
            "encode the classes as 0..K-1, or use task='regression' for a continuous target."
        )
    return targets.astype(np.int64), None


def _outputs(model: nn.Module, x: torch.Tensor, task: Task) -> torch.Tensor:
    return task.shape_outputs(model(x))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task) -> tuple:
    """(loss, outputs) of a batch: the model's own ``training_loss`` where it has one
    (SFCN's soft bins: KL over bin logits), else the task's loss of its outputs."""
    own = getattr(model, "training_loss", None)
    found = own(x, y) if own is not None else None
    if found is None:
        out = _outputs(model, x, task)
        return task.loss(out, y), out
    loss, out = found
    return loss, task.shape_outputs(out)


def _check_model_stats(model: nn.Module, stats: tuple[float, float] | None) -> None:
    """Refuse a model built for other target statistics than these training targets'."""
    expected = getattr(model, "target_stats", None)
    if expected is None:
        return
    if stats is None or not np.allclose(expected, stats, rtol=1e-6, atol=1e-9):
        raise ConfigError(
            f"the model was built for training targets with (mean, std) = "
            f"{tuple(expected)}, but these training targets have {stats} (None: "
            "classification); build it with SFCN.fit_config(config, targets[train_idx]) "
            "on the same training subjects and a regression task."
        )


@dataclass(frozen=True)
class _Plan:
    task: Task
    epochs: int
    lr: float
    batch_size: int
    seed: int
    device: torch.device
    use_amp: bool
    progress: bool
    num_workers: int
    desc: str
    stats: tuple[float, float] | None
    bn_recalibration: bool


def _loader(volumes, idx, targets, p: _Plan, shuffle: bool) -> DataLoader:
    return DataLoader(
        VolumeDataset(volumes, idx, targets),
        batch_size=p.batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(p.seed),
        num_workers=p.num_workers,
        pin_memory=p.device.type == "cuda",
    )


def _train_epoch(model, loader, optimizer, scaler, p: _Plan) -> float:
    model.train()
    total = 0.0
    for x, y in loader:
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(p.device.type, dtype=torch.float16, enabled=p.use_amp):
            loss = _loss(model, x, y, p.task)[0]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(x)
    return total / len(loader.dataset)


def _recalibrate_bn(model: nn.Module, loader: DataLoader, p: _Plan) -> None:
    """Precise BatchNorm: running statistics from one pass over the training volumes.

    Training keeps an exponential moving average (momentum 0.1) of the batch statistics
    while the weights move; at batch 8 on ~100 volumes it can lag the last weights enough
    to shift every eval-mode output (a fold with a perfect ranking and all calls in one
    class). :func:`torch.optim.swa_utils.update_bn` replaces it by the equal-weight mean of
    the per-batch statistics of an unshuffled, gradient-free pass in train mode (Wu &
    Johnson, "Rethinking 'Batch' in BatchNorm", 2021). Weights are untouched and the
    random state is forked, so dropout draws here leave training unchanged.
    """
    with torch.random.fork_rng(devices=[p.device.index or 0] if p.device.type == "cuda" else []):
        with torch.autocast(p.device.type, dtype=torch.float16, enabled=p.use_amp):
            update_bn(loader, model, device=p.device)


@torch.no_grad()
def _evaluate(model, loader, p: _Plan) -> tuple[float, float]:
    """Return (mean loss, accuracy or MAE in target units)."""
    model.eval()
    loss_sum, score_sum = 0.0, 0.0
    for x, y in loader:
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        with torch.autocast(p.device.type, dtype=torch.float16, enabled=p.use_amp):
            loss, out = _loss(model, x, y, p.task)
        loss_sum += float(loss) * len(x)
        score_sum += p.task.score(out, y, p.stats[1] if p.stats else 1.0)
    return loss_sum / len(loader.dataset), score_sum / len(loader.dataset)


def _check_split(train_idx, val_idx, n: int) -> tuple[np.ndarray, np.ndarray]:
    train_idx = np.asarray(train_idx, dtype=np.int64).ravel()
    val_idx = np.asarray([] if val_idx is None else val_idx, dtype=np.int64).ravel()
    if len(train_idx) == 0:
        raise ConfigError("train_idx is empty; a fold needs training volumes.")
    check_indices("train_idx", train_idx, n)
    check_indices("val_idx", val_idx, n)
    overlap = np.intersect1d(train_idx, val_idx)
    if len(overlap):
        raise DataLeakageError(
            f"{len(overlap)} volume(s) are in both train_idx and val_idx (e.g. "
            f"{overlap[:5].tolist()}); validation volumes must be held out of training."
        )
    return train_idx, val_idx


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_model(
    model: nn.Module,
    volumes,
    targets,
    train_idx: Sequence[int],
    val_idx: Sequence[int] | None,
    *,
    task: Task | str = "classification",
    epochs: int = 20,
    lr: float = 3e-4,
    batch_size: int = 8,
    seed: int = 42,
    device: str | torch.device = "auto",
    amp: bool = True,
    progress: bool = True,
    num_workers: int = 0,
    desc: str = "",
    bn_recalibration: bool = True,
) -> TrainResult:
    """Train ``model`` with Adam and keep the epoch with the lowest validation loss.

    The loss is the task's (cross-entropy or MSE) unless the model defines
    ``training_loss(inputs, targets)`` returning ``(loss, outputs)`` (``None``: the task's
    loss); SFCN with ``soft_bins`` does (the KL loss of Peng et al.'s soft labels), for
    the training and the validation loss alike.

    Parameters
    ----------
    model : torch.nn.Module
        An initialised network (e.g. from :func:`brainmaps.models.create_model`). On
        return it holds the weights of the best epoch, on its original device.
    volumes : sequence of numpy.ndarray
        Indexable volume store (see :class:`VolumeDataset`).
    targets : array-like, shape (len(volumes),)
        Class indices (classification) or values (regression), one per volume.
    train_idx, val_idx : sequence of int
        Positions in ``volumes``; an empty ``val_idx`` keeps the last epoch.
    task : Task or {"classification", "regression"}
        A task object of :mod:`brainmaps.tasks` or its name.
        Cross-entropy on logits, or MSE on standardised targets (the model must have
        one output; the mean/std of the training targets are in the result).
    epochs, batch_size : int
    lr : float
        Adam learning rate (3e-4 in Kan et al.).
    seed : int
        Seeds batch order, dropout and any other torch randomness; the global torch
        random state is restored afterwards.
    device : {"auto", "cpu", "cuda"} or torch.device
    amp : bool
        Mixed precision (``torch.autocast`` + ``GradScaler``); only used on CUDA.
    progress : bool
        Show a tqdm bar over epochs with the losses.
    num_workers : int
        DataLoader worker processes.
    desc : str
        Label of the progress bar (e.g. ``"fold 1/10"``).
    bn_recalibration : bool
        Before each validation (or after the last epoch without a validation set),
        recompute the BatchNorm running statistics over the training volumes with
        :func:`torch.optim.swa_utils.update_bn` (one forward pass, no gradient); the
        weights, and so the training losses, are the same either way. ``False`` keeps
        the running averages of training (brainmaps <= 0.3).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        On bad parameters or targets, or a model built for training targets with other
        statistics (its ``target_stats``).
    DataLeakageError
        If a volume is in both ``train_idx`` and ``val_idx``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}.")
    dev = resolve_device(device)
    train_idx, val_idx = _check_split(train_idx, val_idx, len(volumes))
    task = get_task(task)
    y, stats = _prepare_targets(targets, train_idx, task)
    _check_model_stats(model, stats)
    use_amp = bool(amp) and dev.type == "cuda"
    desc = desc or "training"
    plan = _Plan(
        task,
        epochs,
        lr,
        batch_size,
        seed,
        dev,
        use_amp,
        progress,
        num_workers,
        desc,
        stats,
        bool(bn_recalibration),
    )
    original_device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            best_epoch, best_state, history = _fit(
                model.to(dev), volumes, y, train_idx, val_idx, plan
            )
            model.load_state_dict(best_state)
        finally:
            model.to(original_device)
    return TrainResult(best_state, best_epoch, history, stats, task)


def _fit(model, volumes, y, train_idx, val_idx, p: _Plan):
    """The epoch loop; returns (best epoch, its state_dict, history)."""
    loaders = [_loader(volumes, train_idx, y, p, True), _loader(volumes, val_idx, y, p, False)]
    recalibration = _loader(volumes, train_idx, y, p, False)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    scaler = torch.amp.GradScaler(p.device.type, enabled=p.use_amp)
    rows, best = [], (None, float("inf"), None)  # (epoch, val loss, state)
    bar = tqdm(range(1, p.epochs + 1), desc=p.desc, unit="epoch", disable=not p.progress)
    for epoch in bar:
        start = time.perf_counter()
        train_loss = _train_epoch(model, loaders[0], optimizer, scaler, p)
        val_loss, score = float("nan"), float("nan")
        if p.bn_recalibration and (len(val_idx) or epoch == p.epochs):
            _recalibrate_bn(model, recalibration, p)
        if len(val_idx):
            val_loss, score = _evaluate(model, loaders[1], p)
        if not np.isfinite(train_loss):
            warnings.warn(
                f"{p.desc}: the training loss is {train_loss} at epoch {epoch}; training "
                "diverged, lower --lr.",
                BrainmapsWarning,
                stacklevel=3,
            )
        if val_loss < best[1] or (not len(val_idx) and epoch == p.epochs):
            best = (epoch, val_loss, _snapshot(model))
        rows.append((epoch, train_loss, val_loss, score, time.perf_counter() - start))
        bar.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}")
    if best[2] is None:  # validation loss never finite: keep the last epoch
        best = (p.epochs, float("nan"), _snapshot(model))
    score_name = p.task.score_name
    columns = ["epoch", "train_loss", "val_loss", score_name, "seconds"]
    return best[0], best[2], pd.DataFrame(rows, columns=columns)
