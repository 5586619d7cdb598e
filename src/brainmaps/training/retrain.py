"""Train a fresh model on (modified) volumes and score it: one retrain of ROAR / KAR.

:mod:`brainmaps.steps.roar` calls :func:`retrain_and_score` once per method, fraction
and fold on volumes whose top (or bottom) ranked voxels were replaced (Hooker et al.
2019); tests call it on tiny planted cohorts. It is :func:`~brainmaps.training.loop.
train_model` (the run's training loop: Adam, best validation epoch) followed by the one
predict path and the classification metrics, with the model built under a fixed seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from brainmaps.evaluation.metrics import classification_metrics
from brainmaps.models.predict import predict_volumes
from brainmaps.training.loop import train_model
from brainmaps.training.run import TrainingDivergedError

__all__ = ["retrain_and_score"]


def retrain_and_score(
    make_model: Callable[[], torch.nn.Module],
    volumes,
    labels: np.ndarray,
    train_idx: Sequence[int],
    val_idx: Sequence[int],
    test_idx: Sequence[int],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    amp: bool = True,
    device: str = "auto",
    num_workers: int = 0,
    bn_recalibration: bool = True,
    progress: bool = False,
    desc: str = "",
) -> dict:
    """Train a fresh model on ``volumes[train_idx]`` and score it on ``volumes[test_idx]``.

    Parameters
    ----------
    make_model : callable
        Returns a new, initialised network; called under ``torch.manual_seed(seed)`` (the
        global random state is restored afterwards).
    volumes : sequence of numpy.ndarray
        Indexable volume store (modified or not).
    labels : numpy.ndarray of int
        Class index of every volume.
    train_idx, val_idx, test_idx : sequence of int
        Positions in ``volumes``; ``val_idx`` picks the best epoch (empty: the last).
    epochs, lr, batch_size, seed, amp, device, num_workers, bn_recalibration, progress, desc
        As in :func:`brainmaps.training.loop.train_model`.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``roc_auc`` on the test volumes,
        ``best_epoch`` and ``seconds`` (training and scoring).
    """
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    result = train_model(
        model, volumes, labels, train_idx, val_idx, epochs=epochs, lr=lr,
        batch_size=batch_size, seed=seed, device=device, amp=amp, progress=progress,
        num_workers=num_workers, bn_recalibration=bn_recalibration, desc=desc,
    )  # fmt: skip
    proba = predict_volumes(model, volumes, test_idx, batch_size=batch_size, device=device)
    if not np.all(np.isfinite(proba)):
        raise TrainingDivergedError(
            f"{desc or 'retraining'}: the model predicts non-finite values; training "
            f"diverged. Lower the run's learning rate (now {lr:g})."
        )
    m = classification_metrics(np.asarray(labels)[np.asarray(test_idx)], proba)
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "best_epoch": int(result.best_epoch),
        "seconds": round(time.perf_counter() - start, 3),
    }
