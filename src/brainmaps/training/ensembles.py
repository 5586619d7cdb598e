"""Apply the fold models of a run to new scans and average them (a fold ensemble)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.data.channels import channel_columns, channel_names
from brainmaps.data.preprocess import preprocess_img
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.predict import predict_volumes
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.tasks import get_task

__all__ = ["fold_checkpoints", "predict_run"]


def fold_checkpoints(run_dir: str | os.PathLike | RunFolder) -> list[Path]:
    """Return the fold checkpoint files of a run, in fold order.

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a run folder or holds no finished fold.
    """
    run = open_run(run_dir)
    paths = run.checkpoints()
    if not paths:
        raise ConfigError(
            f"run folder {run.path} has no trained fold (no {run.layout.CHECKPOINT} in its "
            "fold folders); finish or resume 'brainmaps train' first."
        )
    return paths


def _subject_paths(images, channels: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The images of each subject as a tuple of one path per channel (count checked)."""
    n = max(len(channels), 1)
    named = f"{n} channels ({', '.join(channels)})" if channels else "1 channel"
    subjects = []
    for i, item in enumerate(images, start=1):
        paths = (item,) if isinstance(item, str | os.PathLike) else tuple(item)
        if len(paths) != n:
            how = (
                f"give {n} paths per subject, one per channel in this order (CLI: "
                f"comma-joined, e.g. a_{channels[0]}.nii.gz,a_{channels[1]}.nii.gz)"
                if channels
                else "give one path per subject"
            )
            raise ConfigError(
                f"subject {i} has {len(paths)} image(s) but the run has {named}; {how}."
            )
        subjects.append(tuple(os.fspath(p) for p in paths))
    return subjects


def _volume(paths: tuple[str, ...], prep) -> np.ndarray:
    """One subject: ``(X, Y, Z)`` for one channel, ``(C, X, Y, Z)`` for several."""
    if len(paths) == 1:
        return preprocess_img(paths[0], prep)
    return np.stack([preprocess_img(p, prep) for p in paths])


def predict_run(
    run_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike | Sequence[str | os.PathLike]],
    *,
    device: str = "auto",
    batch_size: int = 4,
) -> pd.DataFrame:
    """Predict new scans with the ensemble of a run's fold models.

    Each image is preprocessed exactly as in the run (grid, normalisation, mask), every
    fold model predicts it, and the fold outputs are averaged: class probabilities for
    classification, the predicted value (and its spread over folds) for regression.

    Parameters
    ----------
    run_dir : str or os.PathLike
        A folder written by :func:`brainmaps.training.run.train_run`.
    images : sequence of path-like, or of tuples of path-like
        NIfTI files, in the same space as the training images: one per subject, or for
        a run with several input channels a tuple of one file per channel, in the run's
        channel order.
    device : {"auto", "cpu", "cuda"}
        Where the models run.
    batch_size : int
        Volumes per forward pass.

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``path`` (the first channel's file; ``path_<name>`` for the
        other channels), ``p_<class>`` columns and ``predicted`` (class name), or
        ``prediction`` and ``prediction_std`` for regression, and ``n_models``.

    Raises
    ------
    ConfigError
        No images, or a subject whose number of files is not the run's channel count.
    """
    if not images:
        raise ConfigError("no images to predict; give one or more NIfTI files.")
    run = open_run(run_dir)
    channels = channel_names(run.config.data.path_col, run.config.data.suffix)
    subjects = _subject_paths(images, channels)
    checkpoints = fold_checkpoints(run)
    prep = run.preprocess
    volumes = np.stack([_volume(paths, prep) for paths in subjects])
    indices = np.arange(len(volumes))
    outputs, meta = [], {}
    for path in checkpoints:
        model, meta = model_from_checkpoint(path)
        outputs.append(
            predict_volumes(
                model,
                volumes,
                indices,
                batch_size=batch_size,
                device=device,
                task=meta["task"],
                target_stats=meta.get("target_stats"),
            )
        )
    stacked = np.stack(outputs)
    columns = channel_columns(channels)
    table = pd.DataFrame({c: [paths[j] for paths in subjects] for j, c in enumerate(columns)})
    if not get_task(meta["task"]).is_classification:
        table["prediction"] = stacked.mean(axis=0).ravel()
        table["prediction_std"] = stacked.std(axis=0).ravel()
    else:
        mean = stacked.mean(axis=0)
        for j, name in enumerate(meta["classes"]):
            table[f"p_{name}"] = mean[:, j]
        table["predicted"] = np.asarray(meta["classes"], dtype=object)[mean.argmax(axis=1)]
    table["n_models"] = len(checkpoints)
    return table
