"""Explain every subject of a run with the fold model that did not train on it."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from brainmaps.attribution._channel_maps import (
    map_channels,
    save_channel_maps,
    with_channel_maps,
)
from brainmaps.attribution._group_maps import class_means, regression_gap, save_means
from brainmaps.attribution.base import check_options, create_method, get_method, method_options
from brainmaps.data.io import load_img, save_img
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import VolumeDataset
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.layout import RunLayout, map_filename
from brainmaps.tasks import DEFAULT_AGE_GROUPS, check_age_groups
from brainmaps.utils import atomic_path

__all__ = [
    "class_means",
    "explain_run",
    "explained_units",
    "map_filename",
    "occlusion_cohort_map",
    "regression_gap",
    "resolve_targets",
]


def resolve_targets(run: RunFolder, target: str | int, idx: np.ndarray) -> Any:
    """Turn the user's ``target`` into what :meth:`AttributionMethod.attribute` takes.

    Parameters
    ----------
    run : RunFolder
    target : "predicted", "true", class name or class index
    idx : numpy.ndarray of int
        Rows of the run's table being explained (for ``"true"``).

    Returns
    -------
    str, int or torch.Tensor
        ``"predicted"`` (also for every regression run), a class index, or the true
        class of each row.

    Raises
    ------
    ConfigError
        If ``target`` is none of these.
    """
    if not run.task.is_classification or target == "predicted":
        return "predicted"
    if target == "true":
        return torch.as_tensor(run.labels[idx], dtype=torch.long)
    if isinstance(target, str) and target in run.classes:
        return run.classes.index(target)
    if isinstance(target, int | np.integer) and 0 <= int(target) < len(run.classes):
        return int(target)
    raise ConfigError(
        f"target must be 'predicted', 'true' or a class of the run "
        f"({', '.join(run.classes)}), got {target!r}."
    )


def _method_kwargs(
    methods: Sequence[str], layer: str | None, options: dict | None, shape=None
) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ConfigError(
            f"options given for {unknown}, which are not among the methods {list(methods)}."
        )
    kwargs = {}
    for name in methods:
        get_method(name)  # unknown names fail here, before any work
        opts = dict(options.get(name, {}))
        check_options(name, opts, shape)  # a former option in voxels: its mm at this grid
        if layer is not None and "layer" in method_options(name):
            opts.setdefault("layer", layer)
        kwargs[name] = opts
    return kwargs


def _target_names(run: RunFolder, model_targets: torch.Tensor | None, n: int) -> list[str]:
    if not run.task.is_classification or model_targets is None:
        return ["output"] * n
    return [run.classes[int(t)] for t in model_targets]


def explained_units(run: RunFolder, model, x: torch.Tensor, targets) -> torch.Tensor | None:
    """The class index each map of ``x`` explains: ``targets`` of :func:`resolve_targets`
    made concrete (``"predicted"`` is the ``model``'s class); ``None`` for regression."""
    if not run.task.is_classification:
        return None
    if isinstance(targets, str):
        with torch.no_grad():
            return model(x).argmax(dim=1).cpu()
    t = torch.as_tensor(targets).reshape(-1)
    return t.expand(x.shape[0]) if t.numel() == 1 else t


def _write_manifest(path: Path, rows: list[dict]) -> None:
    table = pd.DataFrame(rows).sort_values(["fold", "subject", "session"], kind="stable")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _read_manifest(layout: RunLayout, method: str) -> dict[str, dict]:
    folder, path = layout.maps_dir(method), layout.maps_manifest(method)
    if not path.is_file():
        return {}
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})
    table["session"] = table["session"].fillna("")
    return {
        row["file"]: row for row in table.to_dict("records") if (folder / row["file"]).is_file()
    }


def _native(img: nib.Nifti1Image, source: str) -> nib.Nifti1Image:
    from nilearn.image import resample_to_img

    reference = load_img(source)
    return resample_to_img(
        img, reference, interpolation="linear", force_resample=True, copy_header=True
    )


def explain_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] = ("grad_cam", "guided_backprop"),
    *,
    target: str | int = "predicted",
    layer: str | None = None,
    options: dict[str, dict] | None = None,
    batch_size: int = 4,
    device: str = "auto",
    native_space: bool = False,
    subjects_per_fold: int | None = None,
    age_groups: Sequence[float] | str | None = DEFAULT_AGE_GROUPS,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Compute out-of-fold attribution maps for every subject of a run.

    Each subject is explained by the model of the fold in which it was a test subject,
    so no map comes from a model that saw the subject in training. Maps are written as
    ``<run>/maps/<method>/sub-<id>.nii.gz`` on the model grid (its affine places them on
    the MNI template in any viewer) with raw values; ``mean_<class>.nii.gz`` (mean map
    of the subjects of each true class) and ``mean_conjoined.nii.gz`` (the sum of the class
    means), or for regression ``mean_all.nii.gz`` and the group means of
    :meth:`Regression.map_groups <brainmaps.tasks.Regression.map_groups>` (Hofmann et
    al. 2022): ``mean_young`` and ``mean_old`` (true value below ``age_groups[0]``, at
    least ``age_groups[1]``) and, from the out-of-fold ``predictions.tsv``,
    ``mean_gap_positive`` and ``mean_gap_negative`` (see :func:`regression_gap`); and
    ``maps.tsv`` (one row per map:
    subject, fold, true label, explained class, prediction, seconds) are added. A
    subject whose map exists is skipped, so an interrupted call resumes.

    A run with several input channels (:mod:`brainmaps.data.channels`) gets the same
    summed maps, and, for the methods that can give one map per input channel (those
    with :attr:`~brainmaps.attribution.base.AttributionMethod.channel_maps`: gradient,
    guided backprop, SmoothGrad, integrated gradients, LRP), also each channel's maps and
    class means in ``maps/<method>/channel-<name>/``; their sum over channels is the
    summed map (up to float rounding for SmoothGrad). The class activation maps (Grad-CAM,
    HiResCAM, LayerCAM, CAM: maps of a layer's feature maps, which have no input channels)
    and occlusion and Meaningful Perturbations (which perturb every channel at once) write
    the summed map only.
    ``native_space`` copies are made of the summed maps only.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder written by ``brainmaps train``.
    methods : sequence of str
        Registry names (:func:`brainmaps.attribution.list_methods`).
    target : "predicted", "true", class name or class index
        Which output to explain for every subject.
    layer : str, optional
        Layer for the methods that take one (Grad-CAM, HiResCAM, LayerCAM, CAM).
    options : dict, optional
        Extra options per method, e.g. ``{"occlusion": {"window_mm": 12}}``.
    batch_size : int
        Subjects per call of a method.
    device : {"auto", "cpu", "cuda"}
    native_space : bool
        Also write each map resampled onto the subject's source image
        (``maps/<method>/native/``).
    subjects_per_fold : int, optional
        Explain only this many test subjects of each fold: a seeded sample that takes
        the classes in turn, the same for every method and every call. For the slow
        methods (Meaningful Perturbations, occlusion) on large cohorts; the class means
        are then means over the sample. Default: every subject.
    age_groups : (float, float), str or None
        Regression runs: cutoffs of the ``young`` (below the first) and ``old`` (from the
        second) group maps, in the target's units (default 47 and 60 years, Hofmann et
        al.); ``None`` or ``"none"``: no age groups. Only the group means depend on them:
        a call with other cutoffs recomputes the means, not the subject maps.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict of str to pandas.DataFrame
        The ``maps.tsv`` table of each method.
    """
    run = open_run(run_dir)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("no attribution method given; choose from list_methods().")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    kwargs = _method_kwargs(methods, layer, options, run.grid.shape)
    age_groups = check_age_groups(age_groups)
    resolve_targets(run, target, np.arange(1))  # a bad target fails before any work
    if subjects_per_fold is not None and (
        isinstance(subjects_per_fold, bool)
        or not isinstance(subjects_per_fold, int)
        or subjects_per_fold < 1
    ):
        raise ConfigError(
            f"subjects_per_fold must be a positive integer or None (every subject), got "
            f"{subjects_per_fold!r}."
        )
    checkpoints = run.fold_models()
    dev = resolve_device(device)
    folders = {m: run.layout.maps_dir(m) for m in methods}
    done = {m: _read_manifest(run.layout, m) for m in methods}
    volumes = run.volumes(progress=progress)
    channels = map_channels(volumes, methods)
    done = {m: with_channel_maps(run, m, done[m], channels[m]) for m in methods}
    todo = _todo(run, methods, done, subjects_per_fold)
    bar = tqdm(total=sum(len(v) for v in todo.values()), desc="explain", disable=not progress)
    for k in range(run.n_folds):
        if not todo[k]:
            continue
        model, _ = model_from_checkpoint(checkpoints[k])
        model.to(dev)
        for start in range(0, len(todo[k]), batch_size):
            batch = todo[k][start : start + batch_size]
            _explain_batch(
                run, model, volumes, batch, kwargs, target, folders, done, dev, k, channels
            )
            if native_space:
                _write_native(run, batch, folders, methods)
            bar.update(len(batch))
    bar.close()
    return {m: _finish(run, m, done[m], channels[m], age_groups) for m in methods}


def _sample(run: RunFolder, rows: np.ndarray, n: int | None, fold: int) -> np.ndarray:
    """Up to ``n`` of ``rows``: a seeded shuffle, then the classes taken in turn."""
    if n is None or n >= len(rows):
        return rows
    rows = np.random.default_rng(fold).permutation(rows)
    if not run.task.is_classification:
        return np.sort(rows[:n])
    labels = run.labels[rows]
    rank = np.zeros(len(rows), dtype=int)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(int((labels == c).sum()))
    order = np.lexsort((labels, rank))
    return np.sort(rows[order[:n]])


def _todo(
    run: RunFolder, methods: list[str], done: dict, per_fold: int | None = None
) -> dict[int, list[int]]:
    todo: dict[int, list[int]] = {}
    for k in range(run.n_folds):
        rows = _sample(run, run.indices(k, "test"), per_fold, k)
        todo[k] = [int(i) for i in rows if any(_file(run, i) not in done[m] for m in methods)]
    return todo


def _file(run: RunFolder, i: int) -> str:
    row = run.table.iloc[i]
    return map_filename(str(row["subject"]), str(row["session"]))


def _batch(volumes, rows: Sequence[int]) -> torch.Tensor:
    """Float32 batch (N, C, X, Y, Z) of ``volumes[rows]``; a 3-D volume gets one channel."""
    items = VolumeDataset(volumes, rows)
    return torch.stack([items[j] for j in range(len(items))])


def _explain_batch(run, model, volumes, batch, kwargs, target, folders, done, dev, fold, channels):
    x = _batch(volumes, batch).to(dev)
    targets = resolve_targets(run, target, np.asarray(batch))
    if isinstance(targets, torch.Tensor):
        targets = targets.to(dev)
    units = explained_units(run, model, x, targets)
    names = _target_names(run, units, len(batch))
    for method, opts in kwargs.items():
        pending = [j for j, i in enumerate(batch) if _file(run, i) not in done[method]]
        if not pending:
            continue
        sub_t = (
            targets
            if not isinstance(targets, torch.Tensor) or targets.dim() == 0
            else targets[pending]
        )
        start = time.perf_counter()
        keep = bool(channels[method])
        explainer = create_method(method, model, **opts)
        maps = explainer.attribute(x[pending], target=sub_t, keep_channels=keep)
        seconds = (time.perf_counter() - start) / len(pending)
        maps = maps.float().cpu().numpy()
        for j, m in zip(pending, maps, strict=True):
            i = batch[j]
            row = run.table.iloc[i]
            name = _file(run, i)
            if keep:
                m = save_channel_maps(run, method, channels[method], row, m)
            save_img(run.grid.to_img(m), folders[method] / name)
            done[method][name] = {
                "subject": str(row["subject"]),
                "session": str(row["session"]),
                "fold": fold,
                "label": row["label"],
                "explained": names[j],
                "seconds": seconds,
                "file": name,
            }
        _write_manifest(run.layout.maps_manifest(method), list(done[method].values()))


def _write_native(run: RunFolder, batch: list[int], folders: dict, methods: list[str]) -> None:
    for i in batch:
        name = _file(run, i)
        source = str(run.table.iloc[i]["path"])
        for m in methods:
            out = run.layout.native_map(m, name)
            if not out.is_file():
                save_img(_native(nib.load(folders[m] / name), source), out)


def _finish(
    run: RunFolder, method: str, done: dict, channels=(), age_groups=DEFAULT_AGE_GROUPS
) -> pd.DataFrame:
    manifest = pd.DataFrame(list(done.values()))
    if manifest.empty:
        return manifest
    means = class_means(run, run.layout.maps_dir(method), manifest, age_groups)
    save_means(run, means, lambda g: run.layout.group_map(method, g))
    for channel in channels:
        folder = run.layout.channel_map_dir(method, channel)
        means = class_means(run, folder, manifest, age_groups)
        save_means(run, means, lambda g, c=channel: run.layout.channel_group_map(method, c, g))
    return manifest.sort_values(["fold", "subject", "session"], kind="stable").reset_index(
        drop=True
    )


def occlusion_cohort_map(
    run_dir: str | os.PathLike | RunFolder,
    *,
    window_mm: float = 18.0,
    stride_mm: float = 9.0,
    fill: str = "zero",
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """The paper's cohort occlusion map: the drop in test accuracy per occluded cube.

    For each fold, the fold model classifies its own test subjects with a cube occluded
    at every position (:func:`~brainmaps.attribution.occlusion.occlusion_accuracy_map`);
    each fold's map is written to ``<run>/maps/occlusion/cohort_accuracy_drop_fold-<k>.nii.gz``
    and their mean, weighted by the number of test subjects, to
    ``cohort_accuracy_drop.nii.gz``. A run with several input channels (BrainImageNet's
    grey-matter density and volume) has every channel of a cube occluded together.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A classification run folder.
    window_mm, stride_mm : float
        Cube edge and step in millimetres.
    fill : {"zero", "mean"}
        Value of the occluded voxels.
    device : {"auto", "cpu", "cuda"}
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The written mean map.
    """
    from brainmaps.attribution.occlusion import occlusion_accuracy_map

    run = open_run(run_dir)
    if not run.task.is_classification:
        raise ConfigError("the cohort occlusion map needs a classification run (accuracy).")
    dev = resolve_device(device)
    volumes = run.volumes(progress=progress)
    total = np.zeros(run.grid.shape)
    checkpoints = run.checkpoints()
    if len(checkpoints) < run.n_folds:
        raise ConfigError(f"run {run.path} is not finished; resume 'brainmaps train' first.")
    for k, path in enumerate(tqdm(checkpoints, desc="occlusion (cohort)", disable=not progress)):
        model, _ = model_from_checkpoint(path)
        idx = run.indices(k, "test")
        x = _batch(volumes, idx).to(dev)
        drop = occlusion_accuracy_map(
            model.to(dev),
            x,
            torch.as_tensor(run.labels[idx]).to(dev),
            window_mm=window_mm,
            stride_mm=stride_mm,
            fill=fill,
            voxel_size=run.grid.voxel_size,
        )
        drop = np.asarray(drop, dtype=np.float32)
        save_img(run.grid.to_img(drop), run.layout.occlusion_cohort_map(k))
        total += drop.astype(np.float64) * len(idx)
    out = run.layout.occlusion_cohort_map()
    save_img(run.grid.to_img((total / len(run.table)).astype(np.float32)), out)
    return out
