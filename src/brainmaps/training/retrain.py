"""Train a fresh model on (modified) volumes or labels and score it.

:mod:`brainmaps.steps.roar` calls :func:`retrain_and_score` once per method, fraction
and fold on volumes whose top (or bottom) ranked voxels were replaced (Hooker et al.
2019); :mod:`brainmaps.steps.sanity` calls :func:`retrain_fold` on a fold's volumes
with its training labels permuted (the data randomisation test of Adebayo et al. 2018)
and keeps the model to explain it; tests call them on tiny planted cohorts. Each is
:func:`~brainmaps.training.loop.train_model` (the run's training loop: Adam, best
validation epoch) followed by the one predict path and the classification metrics,
with the model built under a fixed seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from brainmaps.evaluation.metrics import classification_metrics
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.models.predict import predict_volumes
from brainmaps.run.folder import RunFolder
from brainmaps.training.loop import train_model
from brainmaps.training.run import TrainingDivergedError
from brainmaps.validation import check_int

__all__ = ["check_folds", "fold_model_factory", "fold_training_options", "retrain_and_score",
           "retrain_fold", "retrain_model"]  # fmt: skip


def retrain_and_score(*args, **kwargs) -> dict:
    """Train a fresh model on ``volumes[train_idx]`` and score it on ``volumes[test_idx]``.

    :func:`retrain_model` without the model: the same parameters, its ``scores``.
    """
    return retrain_model(*args, **kwargs)[1]


def retrain_model(
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
) -> tuple[torch.nn.Module, dict]:
    """Train a fresh model on ``volumes[train_idx]``, score it on ``volumes[test_idx]``.

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
    model : torch.nn.Module
        The trained model (its best epoch), on the device ``make_model`` built it on.
    scores : dict
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
    return model, {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "roc_auc": m["roc_auc"],
        "best_epoch": int(result.best_epoch),
        "seconds": round(time.perf_counter() - start, 3),
    }


def check_folds(run: RunFolder, folds: Sequence[int] | None, *, name: str = "folds") -> list[int]:
    """The sorted, unique folds to retrain (default: every fold of the run).

    A fold is an ``int``, a NumPy integer or a float with an integral value (as in
    :func:`~brainmaps.validation.check_int`); booleans are not folds.

    Raises
    ------
    ConfigError
        If ``folds`` is empty or names a fold the run does not have.
    """
    if folds is None:
        return list(range(run.n_folds))
    chosen = []
    for f in folds:
        try:  # an int, a NumPy integer or an integral float, as check_int reads them
            chosen.append(check_int(name, f, min=0, max=run.n_folds - 1))
        except ConfigError:
            raise ConfigError(
                f"{name}: fold {f!r} is not a fold of {run.path}, which has folds "
                f"0..{run.n_folds - 1}; give some of them, e.g. {name}=[0]."
            ) from None
    if not chosen:
        raise ConfigError(f"{name} is empty; give at least one fold, e.g. {name}=[0].")
    return sorted(set(chosen))


def fold_model_factory(run: RunFolder, fold: int) -> Callable[[], torch.nn.Module]:
    """A function that builds a fresh, untrained model like fold ``fold``'s checkpoint.

    The architecture and options come from the checkpoint's metadata (what was really
    trained), not from the configuration, which a run may have changed since.
    """
    _, meta = load_checkpoint(run.fold_models()[fold])
    name, config = meta["model"], dict(meta["model_config"])
    return lambda: create_model(name, **config)


def fold_training_options(
    run: RunFolder, fold: int, *, epochs: int | None = None, random_state: int = 0
) -> dict:
    """The training options with which :func:`retrain_fold` trains fold ``fold`` again.

    Keywords of :func:`retrain_model`: the run's learning rate, batch size, mixed
    precision, BatchNorm recalibration and workers, its epochs unless ``epochs`` is given,
    and the seed ``seed + fold + random_state`` (the fold model's with ``random_state=0``).
    :mod:`brainmaps.steps.roar` passes them to :func:`retrain_and_score` with its modified
    volumes.

    Returns
    -------
    dict
        ``epochs``, ``lr``, ``batch_size``, ``seed``, ``amp``, ``num_workers`` and
        ``bn_recalibration``.
    """
    t = run.config.training
    return {
        "epochs": t.epochs if epochs is None else epochs, "lr": t.lr,
        "batch_size": t.batch_size, "seed": t.seed + fold + random_state, "amp": t.amp,
        "num_workers": run.config.execution.num_workers,
        "bn_recalibration": t.bn_recalibration,
    }  # fmt: skip


def retrain_fold(
    run: RunFolder,
    fold: int,
    volumes,
    labels: np.ndarray,
    *,
    epochs: int | None = None,
    random_state: int = 0,
    device: str = "auto",
    progress: bool = False,
    desc: str = "",
) -> tuple[torch.nn.Module, dict]:
    """Train fold ``fold``'s model again from scratch with the run's configuration.

    The fold's training and validation volumes, its checkpoint's model
    (:func:`fold_model_factory`) and :func:`fold_training_options`: the run's learning
    rate, batch size, mixed precision, BatchNorm recalibration and workers; the seed of the
    weights and batch order is the run's ``seed + fold + random_state``, so with
    ``random_state=0``, the run's epochs and unchanged inputs it is the fold model again.
    Scored on the fold's test volumes.

    Parameters
    ----------
    run : RunFolder
        A classification run.
    fold : int
    volumes : sequence of numpy.ndarray
        The run's volumes (modified or not), indexed like its table.
    labels : numpy.ndarray of int
        Class index of every volume (the run's, or changed ones).
    epochs : int, optional
        Default: the run's.
    random_state : int
        Added to the training seed.
    device, progress, desc
        As in :func:`retrain_model`.

    Returns
    -------
    model : torch.nn.Module
    scores : dict
        As in :func:`retrain_model`, with ``n_train``, ``n_val`` and ``n_test``.
    """
    train, val, test = (run.indices(fold, role) for role in ("train", "val", "test"))
    model, scores = retrain_model(
        fold_model_factory(run, fold), volumes, labels, train, val, test,
        **fold_training_options(run, fold, epochs=epochs, random_state=random_state),
        device=device, progress=progress, desc=desc,
    )  # fmt: skip
    return model, {**scores, "n_train": len(train), "n_val": len(val), "n_test": len(test)}
