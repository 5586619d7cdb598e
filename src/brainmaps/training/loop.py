"""Train one model on a fold and predict with it.

Follows Kan et al.: Adam (lr 3e-4), cross-entropy, the epoch with the lowest validation
loss is kept. Volumes are read one batch at a time from any indexable store (a
memory-mapped cache, a list of arrays), never stacked in memory. On the CPU, the same
seed gives the same weights and history; on CUDA, mixed precision is used when asked.
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
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from brainmaps.exceptions import BrainmapsWarning, ConfigError, DataLeakageError, ShapeError

__all__ = ["TrainResult", "VolumeDataset", "predict_volumes", "resolve_device", "train_model"]

_TASKS = ("classification", "regression")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"`` into a :class:`torch.device`.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        If CUDA is requested but not available, or the name is unknown.
    """
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name!r} was requested but CUDA is not available (torch "
                f"{torch.__version__}); use --device cpu or auto."
            )
        resolved = torch.device(name)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) "
                "found; use --device cuda or auto."
            )
        return resolved
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}.")


class VolumeDataset(Dataset):
    """Serve ``(volume, target)`` pairs from an indexable volume store.

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        Anything with ``len()`` and ``volumes[i] -> array`` of shape (X, Y, Z) or
        (C, X, Y, Z), e.g. a memory-mapped cache; read lazily, one item at a time.
    indices : sequence of int
        Which volumes this dataset serves, in order.
    targets : array-like, optional
        One target per volume of ``volumes`` (not per index). Without targets the
        dataset yields volumes only.

    Notes
    -----
    Items are float32 tensors of shape (C, X, Y, Z): a channel axis is added to 3-D
    volumes. Targets are int64 for integer labels, float32 otherwise.
    """

    def __init__(self, volumes, indices, targets=None) -> None:
        self.volumes = volumes
        self.indices = np.asarray(indices, dtype=np.int64).ravel()
        _check_indices("indices", self.indices, len(volumes))
        self.targets = None
        if targets is not None:
            targets = np.asarray(targets)
            if len(targets) != len(volumes):
                raise ShapeError(
                    f"targets has {len(targets)} entries but volumes has {len(volumes)}; "
                    "give one target per volume (indexed like volumes)."
                )
            is_int = targets.dtype.kind in "iub"
            self.targets = torch.as_tensor(targets, dtype=torch.int64 if is_int else torch.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        volume = np.array(self.volumes[index], dtype=np.float32, copy=True)
        if volume.ndim == 3:
            volume = volume[None]
        elif volume.ndim != 4:
            raise ShapeError(
                f"volume {index} has shape {volume.shape}; expected (X, Y, Z) or (C, X, Y, Z)."
            )
        x = torch.from_numpy(volume)
        return x if self.targets is None else (x, self.targets[index])


def _check_indices(name: str, indices: np.ndarray, n: int) -> None:
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise ShapeError(
            f"{name} holds positions outside 0..{n - 1} (min {indices.min()}, max "
            f"{indices.max()}); they must index the volumes."
        )


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes
    ----------
    state_dict : dict
        CPU copy of the weights of the best epoch (lowest validation loss, the earlier
        on ties; the last epoch without a validation set).
    best_epoch : int
        1-based epoch of ``state_dict``, as in ``history["epoch"]``.
    history : pandas.DataFrame
        One row per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``
        (classification) or ``val_mae`` (regression, in target units), ``seconds``.
    target_stats : tuple of float or None
        ``(mean, std)`` of the training targets used to standardise regression targets;
        pass it to :func:`predict_volumes` to get predictions in target units.
    task : str
    """

    state_dict: dict
    best_epoch: int
    history: pd.DataFrame
    target_stats: tuple[float, float] | None = None
    task: str = "classification"


def _prepare_targets(targets, train_idx, task: str):
    """Return (targets as float/int array, target_stats)."""
    targets = np.asarray(targets)
    if task not in _TASKS:
        raise ConfigError(f"task must be one of {_TASKS}, got {task!r}.")
    if task == "regression":
        values = targets.astype(np.float64)
        train = values[train_idx]
        if not np.all(np.isfinite(train)):
            raise ConfigError("regression targets hold NaN or infinite values; drop those rows.")
        std = float(train.std())
        stats = (float(train.mean()), std if std > 0 else 1.0)
        return ((values - stats[0]) / stats[1]).astype(np.float32), stats
    if targets.dtype.kind not in "iub" and not np.all(targets == np.round(targets)):
        raise ConfigError(
            "classification targets must be integer class indices, got non-integer values; "
            "encode the classes as 0..K-1, or use task='regression' for a continuous target."
        )
    return targets.astype(np.int64), None


def _outputs(model: nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    out = model(x)
    if task == "classification":
        if out.dim() != 2:
            raise ShapeError(f"a classifier must output (N, n_classes), got {tuple(out.shape)}.")
        return out
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 1:
        raise ShapeError(
            f"a regression model must output one value per sample (n_classes=1), got "
            f"{tuple(out.shape)}; build the model with n_classes=1."
        )
    return out


def _loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    out = out.float()
    if task == "regression":
        return nn.functional.mse_loss(out, y)
    if int(y.max()) >= out.shape[1]:
        raise ShapeError(
            f"target class {int(y.max())} does not exist in a model with {out.shape[1]} "
            "outputs; build the model with n_classes = number of classes."
        )
    return nn.functional.cross_entropy(out, y)


@dataclass(frozen=True)
class _Plan:
    task: str
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
            loss = _loss(_outputs(model, x, p.task), y, p.task)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += float(loss.detach()) * len(x)
    return total / len(loader.dataset)


@torch.no_grad()
def _evaluate(model, loader, p: _Plan) -> tuple[float, float]:
    """Return (mean loss, accuracy or MAE in target units)."""
    model.eval()
    loss_sum, score_sum = 0.0, 0.0
    for x, y in loader:
        x, y = x.to(p.device, non_blocking=True), y.to(p.device, non_blocking=True)
        with torch.autocast(p.device.type, dtype=torch.float16, enabled=p.use_amp):
            out = _outputs(model, x, p.task)
        loss_sum += float(_loss(out, y, p.task)) * len(x)
        if p.task == "classification":
            score_sum += float((out.argmax(dim=1) == y).sum())
        else:
            score_sum += float((out.float() - y).abs().sum()) * p.stats[1]
    return loss_sum / len(loader.dataset), score_sum / len(loader.dataset)


def _check_split(train_idx, val_idx, n: int) -> tuple[np.ndarray, np.ndarray]:
    train_idx = np.asarray(train_idx, dtype=np.int64).ravel()
    val_idx = np.asarray([] if val_idx is None else val_idx, dtype=np.int64).ravel()
    if len(train_idx) == 0:
        raise ConfigError("train_idx is empty; a fold needs training volumes.")
    _check_indices("train_idx", train_idx, n)
    _check_indices("val_idx", val_idx, n)
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
    task: str = "classification",
    epochs: int = 20,
    lr: float = 3e-4,
    batch_size: int = 8,
    seed: int = 42,
    device: str | torch.device = "auto",
    amp: bool = True,
    progress: bool = True,
    num_workers: int = 0,
    desc: str = "",
) -> TrainResult:
    """Train ``model`` with Adam and keep the epoch with the lowest validation loss.

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
    task : {"classification", "regression"}
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

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        On bad parameters or targets.
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
    y, stats = _prepare_targets(targets, train_idx, task)
    use_amp = bool(amp) and dev.type == "cuda"
    desc = desc or "training"
    plan = _Plan(
        task, epochs, lr, batch_size, seed, dev, use_amp, progress, num_workers, desc, stats
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
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    scaler = torch.amp.GradScaler(p.device.type, enabled=p.use_amp)
    rows, best = [], (None, float("inf"), None)  # (epoch, val loss, state)
    bar = tqdm(range(1, p.epochs + 1), desc=p.desc, unit="epoch", disable=not p.progress)
    for epoch in bar:
        start = time.perf_counter()
        train_loss = _train_epoch(model, loaders[0], optimizer, scaler, p)
        val_loss, score = float("nan"), float("nan")
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
    score_name = "val_accuracy" if p.task == "classification" else "val_mae"
    columns = ["epoch", "train_loss", "val_loss", score_name, "seconds"]
    return best[0], best[2], pd.DataFrame(rows, columns=columns)


@torch.no_grad()
def predict_volumes(
    model: nn.Module,
    volumes,
    indices: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    task: str = "classification",
    target_stats: Sequence[float] | None = None,
) -> np.ndarray:
    """Predict volumes with a trained model, batch by batch, in eval mode without gradients.

    The model's train/eval mode and device are restored afterwards.

    Parameters
    ----------
    model : torch.nn.Module
    volumes : sequence of numpy.ndarray
        Indexable volume store (see :class:`VolumeDataset`).
    indices : sequence of int
        Which volumes to predict, in output order.
    batch_size : int
    device : {"auto", "cpu", "cuda"} or torch.device
    task : {"classification", "regression"}
    target_stats : (mean, std), optional
        For regression: undo the target standardisation of :func:`train_model`
        (``TrainResult.target_stats``).

    Returns
    -------
    numpy.ndarray
        Softmax probabilities of shape (n, n_classes), or regression outputs (n,).
    """
    if task not in _TASKS:
        raise ConfigError(f"task must be one of {_TASKS}, got {task!r}.")
    dev = resolve_device(device)
    was_training = model.training
    original_device = next(model.parameters()).device
    dataset = VolumeDataset(volumes, indices)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = []
    try:
        model.to(dev).eval()
        for x in loader:
            out = _outputs(model, x.to(dev), task).float()
            outputs.append(out.softmax(dim=1) if task == "classification" else out)
    finally:
        model.train(was_training)
        model.to(original_device)
    if not outputs:
        n_out = getattr(model, "config", {}).get("n_classes", 0)
        return np.empty((0, n_out) if task == "classification" else (0,), dtype=np.float32)
    result = torch.cat(outputs).cpu().numpy()
    if task == "regression" and target_stats is not None:
        mean, std = (float(v) for v in target_stats)
        result = result * std + mean
    return result
