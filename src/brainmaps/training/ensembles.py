"""Apply the fold models of a run to new scans and average them (a fold ensemble)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmaps.data.channels import channel_columns, channel_names
from brainmaps.data.preprocess import preprocess_img
from brainmaps.evaluation.bias import apply_bias, fit_bias
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import predict_volumes
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.tasks import get_task
from brainmaps.training.oof_thresholds import resolve_threshold

__all__ = ["FoldEnsemble", "fold_checkpoints", "predict_run"]


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


def _with_members(run: RunFolder, checkpoints: list[Path]) -> list[Path]:
    """Every member of every fold (``training.ensemble``; one per fold without one)."""
    out = []
    for path in checkpoints:
        k = int(path.parent.name.removeprefix("fold-"))
        members = run.layout.member_checkpoints(k)
        out += members if members else [path]
    return out


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


def _volume(paths: tuple, prep) -> np.ndarray:
    """One subject: ``(X, Y, Z)`` for one channel, ``(C, X, Y, Z)`` for several."""
    if len(paths) == 1:
        return preprocess_img(paths[0], prep)
    return np.stack([preprocess_img(p, prep) for p in paths])


class FoldEnsemble:
    """The fold models of a run, loaded once, applied to new scans.

    ``brainmaps predict`` (:func:`predict_run`) and ``brainmaps serve`` predict through
    this class, so a scan gets the same numbers from both.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A folder written by :func:`brainmaps.training.run.train_run`.
    device : {"auto", "cpu", "cuda"}
        Where the models run.

    Attributes
    ----------
    run : RunFolder
    models : list of torch.nn.Module
        One per finished fold (every member of each fold for a run trained with
        ``--ensemble N``), in fold order, on ``device``, in eval mode.
    meta : dict
        The checkpoint metadata of the first fold (task, classes, target statistics).
    channels : tuple of str
        The run's input channel names (``()`` for one channel).

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a run folder or holds no finished fold.
    """

    def __init__(self, run_dir: str | os.PathLike | RunFolder, *, device: str = "auto") -> None:
        self.run = open_run(run_dir)
        self.channels = channel_names(self.run.config.data.path_col, self.run.config.data.suffix)
        self.checkpoints = _with_members(self.run, fold_checkpoints(self.run))
        self.device = resolve_device(device)
        self.models, self.meta = [], {}
        for path in self.checkpoints:
            model, meta = model_from_checkpoint(path)
            self.models.append(model.to(self.device).eval())
            self.meta = self.meta or meta
        self.task = get_task(self.meta["task"])

    @property
    def classes(self) -> tuple[str, ...]:
        """tuple of str : Class names in output order (``()`` for regression)."""
        return tuple(self.meta.get("classes") or ()) if self.task.is_classification else ()

    def subjects(self, images) -> list[tuple[str, ...]]:
        """Each subject's files as a tuple of one path per channel (count checked)."""
        return _subject_paths(images, self.channels)

    def volume(self, paths: str | os.PathLike | nib.Nifti1Image | Sequence) -> np.ndarray:
        """One subject preprocessed as in the run: ``(X, Y, Z)`` or ``(C, X, Y, Z)``.

        ``paths`` is a file or an in-memory image for a one-channel run, else one per
        channel in the run's channel order.
        """
        if isinstance(paths, str | os.PathLike | nib.spatialimages.SpatialImage):
            paths = (paths,)
        return _volume(tuple(paths), self.run.preprocess)

    def member_outputs(self, volumes: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
        """Every fold model's outputs: ``(n_models, n, n_classes)`` probabilities, or
        ``(n_models, n)`` values in target units for regression."""
        indices = np.arange(len(volumes))
        return np.stack(
            [
                predict_volumes(
                    model,
                    volumes,
                    indices,
                    batch_size=batch_size,
                    device=self.device,
                    task=self.task,
                    target_stats=self.meta.get("target_stats"),
                )
                for model in self.models
            ]
        )

    def summarise(self, stacked: np.ndarray) -> dict[str, np.ndarray]:
        """The ensemble's answer from :meth:`member_outputs`.

        Returns
        -------
        dict
            Classification: ``p_<class>`` (mean probability over the models),
            ``std_<class>`` (their spread) and ``predicted`` (the class of the highest
            mean probability); for two classes also ``score``, the mean over the models
            of the pre-sigmoid score log(p_pos / p_neg) (probabilities clipped to
            [1e-7, 1 - 1e-7]; the risk score of Lu et al. 2022). Regression:
            ``prediction`` and ``prediction_std``.
        """
        if not self.task.is_classification:
            return {
                "prediction": stacked.mean(axis=0).ravel(),
                "prediction_std": stacked.std(axis=0).ravel(),
            }
        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
        out = {f"p_{name}": mean[:, j] for j, name in enumerate(self.classes)}
        out.update({f"std_{name}": std[:, j] for j, name in enumerate(self.classes)})
        out["predicted"] = np.asarray(self.classes, dtype=object)[mean.argmax(axis=1)]
        if len(self.classes) == 2:
            p = np.clip(np.asarray(stacked, dtype=float), 1e-7, 1 - 1e-7)
            out["score"] = np.log(p[..., 1] / p[..., 0]).mean(axis=0)
        return out


def predict_run(
    run_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike | Sequence[str | os.PathLike]],
    *,
    device: str = "auto",
    batch_size: int = 4,
    threshold: str | float | None = None,
    targets=None,
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
    threshold : str or float, optional
        Binary runs: ``"0.5"``, ``"youden"``, ``"sens=0.9"``, ``"spec=0.9"`` or a value in
        (0, 1); rules are chosen on the run's out-of-fold predictions
        (:func:`~brainmaps.training.oof_thresholds.resolve_threshold`), never on ``images``.
    targets : sequence of float, optional
        Regression runs: the true value of each scan (e.g. chronological age), for the
        brain-age gap and its bias correction: the line prediction = a + b * target fitted
        on the run's out-of-fold predictions (subjects none of whose models trained on
        them; :mod:`brainmaps.evaluation.bias`) is removed, as the run's own test folds
        were corrected.

    Returns
    -------
    pandas.DataFrame
        One row per subject: ``path`` (the first channel's file; ``path_<name>`` for the
        other channels), ``p_<class>`` columns and ``predicted`` (class name), or
        ``prediction`` and ``prediction_std`` for regression, and ``n_models``. Binary
        runs then have ``score`` (mean pre-sigmoid score of the models, see
        :meth:`FoldEnsemble.summarise`) and ``std_<class>`` (spread of the models'
        probabilities); with ``threshold`` also ``threshold_rule``, ``threshold`` (on
        ``p_<classes[1]>``) and ``call`` (``classes[1]`` when ``p >= threshold``).

    Raises
    ------
    ConfigError
        No images, a subject whose number of files is not the run's channel count, or a
        threshold for a run that is not binary.
    """
    if not images:
        raise ConfigError("no images to predict; give one or more NIfTI files.")
    ensemble = FoldEnsemble(run_dir, device=device)
    rule = None if threshold is None else resolve_threshold(ensemble.run, threshold)
    subjects = ensemble.subjects(images)
    volumes = np.stack([ensemble.volume(paths) for paths in subjects])
    summary = ensemble.summarise(ensemble.member_outputs(volumes, batch_size=batch_size))
    columns = channel_columns(ensemble.channels)
    table = pd.DataFrame({c: [paths[j] for paths in subjects] for j, c in enumerate(columns)})
    for key, values in summary.items():
        if not key.startswith("std_") and key != "score":
            table[key] = values
    table["n_models"] = len(ensemble.models)
    if len(ensemble.classes) == 2:
        table["score"] = summary["score"]
        for name in ensemble.classes:
            table[f"std_{name}"] = summary[f"std_{name}"]
    if rule is not None:
        negative, positive = ensemble.classes
        table["threshold_rule"], table["threshold"] = rule
        table["call"] = np.where(table[f"p_{positive}"] >= rule[1], positive, negative)
    if targets is not None:
        table = _with_targets(ensemble, table, targets)
    return table


def _with_targets(ensemble: FoldEnsemble, table: pd.DataFrame, targets) -> pd.DataFrame:
    """The gap before and after the run's out-of-fold bias line, for scans of known target."""
    if ensemble.task.is_classification:
        raise ConfigError("targets (true values) apply to regression runs; this run classifies.")
    y = np.asarray([float(v) for v in targets], dtype=float)
    if len(y) != len(table) or not np.all(np.isfinite(y)):
        raise ConfigError(
            f"give one finite true value per scan: {len(table)} scan(s), got {len(y)} value(s) "
            f"({', '.join(map(str, list(targets)[:5]))})."
        )
    oof = pd.read_csv(ensemble.run.layout.predictions, sep="\t", dtype={"subject": str})
    line = fit_bias(oof["y"], oof["prediction"])
    if line is None:
        raise ConfigError(
            f"run {ensemble.run.path} has too few out-of-fold predictions to fit the bias line."
        )
    pred = table["prediction"].to_numpy(dtype=float)
    corrected = apply_bias(y, pred, *line)
    return table.assign(
        target=y, gap=pred - y, prediction_corrected=corrected, gap_corrected=corrected - y
    )
