"""The one prediction path: a model applied to volumes, batch by batch.

Training (out-of-fold predictions), re-evaluation on perturbed inputs and fold
ensembles on new scans all predict through :func:`predict_volumes`, so what a task's
outputs mean (softmax probabilities, values in target units) is decided in one place:
the task object (:mod:`brainmaps.tasks`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from brainmaps.exceptions import ShapeError
from brainmaps.models.device import resolve_device
from brainmaps.tasks import Task, get_task

__all__ = ["VolumeDataset", "check_indices", "predict_volumes", "predictor"]


def check_indices(name: str, indices: np.ndarray, n: int) -> None:
    """Raise :class:`ShapeError` if ``indices`` do not index ``n`` volumes."""
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise ShapeError(
            f"{name} holds positions outside 0..{n - 1} (min {indices.min()}, max "
            f"{indices.max()}); they must index the volumes."
        )


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
        check_indices("indices", self.indices, len(volumes))
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


@torch.no_grad()
def predict_volumes(
    model: nn.Module,
    volumes,
    indices: Sequence[int],
    *,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    task: Task | str = "classification",
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
    task : Task or {"classification", "regression"}
        What the outputs mean (:meth:`Task.activate`).
    target_stats : (mean, std), optional
        For regression: undo the target standardisation of :func:`train_model`
        (``TrainResult.target_stats``).

    Returns
    -------
    numpy.ndarray
        Softmax probabilities of shape (n, n_classes), or regression outputs (n,).
    """
    task = get_task(task)
    dev = resolve_device(device)
    was_training = model.training
    original_device = next(model.parameters()).device
    dataset = VolumeDataset(volumes, indices)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = []
    try:
        model.to(dev).eval()
        for x in loader:
            out = task.shape_outputs(model(x.to(dev))).float()
            outputs.append(task.activate(out))
    finally:
        model.train(was_training)
        model.to(original_device)
    if not outputs:
        n_out = getattr(model, "config", {}).get("n_classes", 0)
        return np.empty((0, n_out) if task.is_classification else (0,), dtype=np.float32)
    result = torch.cat(outputs).cpu().numpy()
    if not task.is_classification and target_stats is not None:
        mean, std = (float(v) for v in target_stats)
        result = result * std + mean
    return result


def predictor(
    model: nn.Module,
    *,
    device: str | torch.device = "auto",
    task: Task | str = "classification",
    batch_size: int = 16,
    target_stats: Sequence[float] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a model as ``predict(batch) -> outputs`` on NumPy arrays.

    Parameters
    ----------
    model : torch.nn.Module
        A 3D model; it runs on ``device`` in eval mode (restored after each call).
    device : {"auto", "cpu", "cuda"}
    task : Task or {"classification", "regression"}
        Softmax probabilities ``(B, n_classes)`` or values ``(B,)``.
    batch_size : int
        Volumes per forward pass.
    target_stats : (mean, std), optional
        For regression: report values in target units.

    Returns
    -------
    callable
        Takes a float array ``(B, X, Y, Z)`` or ``(B, C, X, Y, Z)`` and returns a float32
        NumPy array, through :func:`predict_volumes`.
    """
    dev = resolve_device(device)
    task = get_task(task)

    def predict(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        return predict_volumes(
            model,
            batch,
            np.arange(len(batch)),
            batch_size=batch_size,
            device=dev,
            task=task,
            target_stats=target_stats,
        )

    return predict
