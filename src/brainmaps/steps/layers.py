"""Which layer to explain: class activation maps taken at every layer, scored per fold.

A class activation map is only as fine as the feature grid it is taken at, and only as
faithful as the layer's share of the network's evidence: deep layers see more of it,
shallow ones keep resolution. :func:`layer_sweep` measures where that trade-off falls for
a trained run. For each fold model, each CAM-type method and each activation or pooling
layer (:func:`brainmaps.models.tracing.feature_layers`), the fold's test subjects are
explained; the maps are scored by

* localisation (when the run's cohort has a planted ground truth): ROC AUC of the
  absolute conjoined map (the sum of the class-mean maps, as ``brainmaps localise``
  scores it) inside the brain, per fold and over all subjects;
* faithfulness: deletion and insertion areas of a few subjects per fold (the run's
  blurred fill, as ``brainmaps faithfulness``), with a seeded random ranking of the same
  subjects as the control.

Nothing is written under ``maps/``; the table goes to ``analysis/layers.tsv``. It is run
on request (``brainmaps layers RUN``), never by the report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from brainmaps.analysis.faithfulness import curve_auc, fill_volume
from brainmaps.analysis.faithfulness import random_attribution as random_map
from brainmaps.analysis.localisation import localisation_scores
from brainmaps.analysis.maps import ground_truth_mask, on_grid_of, run_brain_mask
from brainmaps.attribution.base import create_method, get_method, method_options
from brainmaps.attribution.cohort import _batch, _sample, explained_units, resolve_targets
from brainmaps.attribution.grad_cam import GradientCAM
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import predictor
from brainmaps.models.tracing import feature_layers
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import record_stage
from brainmaps.steps.faithfulness import subject_curves
from brainmaps.utils import write_tsv
from brainmaps.validation import check_int

__all__ = ["DEFAULT_METHODS", "layer_sweep"]

#: The CAM-type methods swept by default.
DEFAULT_METHODS = ("grad_cam", "hires_cam", "layer_cam")

COLUMNS = [
    "method", "layer", "depth", "feature_grid", "min_axis", "fold", "n_subjects", "roc_auc",
    "relevance_mass", "deletion", "deletion_random", "insertion", "insertion_random",
    "n_faithfulness", "seconds_per_map",
]  # fmt: skip


def _check_methods(methods: Sequence[str]) -> list[str]:
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("methods: expected at least one method, e.g. grad_cam,hires_cam.")
    bad = [m for m in methods if "layer" not in method_options(m)]
    if bad:
        raise ConfigError(
            f"methods: {bad} take no layer option, so there is nothing to sweep; choose "
            f"CAM-type methods such as {', '.join(DEFAULT_METHODS)}."
        )
    # CAM weighs the layer's channels by the classifier's weights: only the layer that
    # feeds the classifier has a map, so there is no sweep to make
    fixed = [m for m in methods if not issubclass(get_method(m), GradientCAM)]
    if fixed:
        raise ConfigError(
            f"methods: {fixed} weigh the channels by the classifier's weights, so only the "
            "layer feeding the classifier can be explained; sweep gradient-weighted methods "
            f"such as {', '.join(DEFAULT_METHODS)}."
        )
    return methods


def _faithfulness_count(run: RunFolder, volumes, value: int | None) -> int:
    """Subjects per fold with deletion / insertion curves: ``value``, or by default 2 on a
    one-channel run and 0 on a multi-channel one (the curves need one channel)."""
    channels = np.shape(volumes[0])[0] if len(volumes) and np.ndim(volumes[0]) == 4 else 1
    if value is None:
        return 2 if channels == 1 else 0
    value = check_int("faithfulness_subjects", value, min=0)
    if value and channels > 1:
        raise ConfigError(
            f"faithfulness_subjects (--faithfulness-subjects) is {value}, but run {run.path} "
            f"has {channels} input channels; deletion and insertion curves are implemented "
            "for one-channel runs only. Give 0 (the default on such runs)."
        )
    return value


def _explained(run: RunFolder, model, x: torch.Tensor, targets, batch_size: int):
    """The class index each subject's map explains (``None`` for regression)."""
    if not run.task.is_classification:
        return None
    dev = next(model.parameters()).device
    units = [
        explained_units(run, model, x[s : s + batch_size].to(dev), _part(targets, s, batch_size))
        for s in range(0, len(x), batch_size)
    ]
    return torch.cat(units).cpu().numpy()


def _part(targets, start: int, size: int):
    """The targets of rows ``start`` to ``start + size`` (a tensor is sliced)."""
    return targets[start : start + size] if isinstance(targets, torch.Tensor) else targets


def _accumulate(run: RunFolder, sums: dict, maps: np.ndarray, rows: np.ndarray) -> None:
    """Add ``maps`` to running per-class ``[sum, count]`` (one key, 0, for regression)."""
    labels = run.labels[rows] if run.task.is_classification else np.zeros(len(rows), int)
    for c in np.unique(labels):
        part = maps[labels == c]
        total = sums.setdefault(c, [np.zeros(maps.shape[1:]), 0])
        total[0] += part.sum(axis=0)
        total[1] += len(part)


def _conjoined_of_sums(sums: dict) -> np.ndarray:
    """Sum over classes of the class means held in :func:`_accumulate`'s ``sums``."""
    return sum(total / count for total, count in sums.values())


def _faithfulness(predict, volumes, rows, maps, targets, fill_opts, seed) -> dict:
    """Mean deletion/insertion areas of ``maps`` and of random maps on ``rows``."""
    areas: dict[str, list[float]] = {}
    fill_opts = dict(fill_opts)
    sigma = fill_opts.pop("sigma")
    for j, i in enumerate(rows):
        x = np.asarray(volumes[int(i)], dtype=np.float32)
        x = x[0] if x.ndim == 4 else x  # one channel (_faithfulness_count)
        opts = dict(fill_opts, fill=fill_volume(x, "blur", sigma=sigma, mask=fill_opts["mask"]))
        opts["random_state"] = [seed, int(i)]
        target = None if targets is None else int(targets[j])
        pair = {"map": (maps[j], target), "random": (random_map(x.shape, [seed, int(i)]), target)}
        for (name, mode), p in subject_curves(predict, x, pair, opts).items():
            key = mode if name == "map" else f"{mode}_random"
            areas.setdefault(key, []).append(curve_auc(opts["fractions"], p))
    return {k: float(np.mean(v)) for k, v in areas.items()}


def layer_sweep(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    layers: Sequence[str] | None = None,
    target: str | int = "predicted",
    subjects_per_fold: int | None = None,
    faithfulness_subjects: int | None = None,
    sigma_mm: float = 8.0,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
) -> Path:
    """Score CAM-type maps taken at every layer of each fold model; write ``layers.tsv``.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A trained run.
    methods : sequence of str
        Methods with a ``layer`` option (default Grad-CAM, HiResCAM, LayerCAM).
    layers : sequence of str, optional
        Module names; default every activation and pooling layer with a spatial output.
    target : {"predicted", "true"} or class
        The class explained, as in ``brainmaps explain``.
    subjects_per_fold : int, optional
        Explain a class-balanced sample of each fold's test subjects (default: all).
    faithfulness_subjects : int, optional
        Subjects per fold whose deletion and insertion curves are measured (0: none).
        Default 2 on a one-channel run, 0 on a multi-channel one (the curves are
        implemented for one channel, as in ``brainmaps faithfulness``).
    sigma_mm : float
        Blur of the faithfulness fill in millimetres.
    seed : int
        Seed of the random control ranking.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Volumes per attribution batch.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/layers.tsv``: one row per method, layer and fold (``fold`` ``all``:
        localisation of the map pooled over every fold's subjects, faithfulness averaged),
        columns ``method, layer, depth`` (0 = first layer), ``feature_grid`` (e.g.
        ``15x19x15``), ``min_axis``, ``fold``, ``n_subjects``, ``roc_auc``,
        ``relevance_mass`` (NaN without a ground truth), ``deletion``,
        ``deletion_random``, ``insertion``, ``insertion_random``, ``n_faithfulness``,
        ``seconds_per_map``.
    """
    run = open_run(run_dir)
    methods = _check_methods(methods)
    if subjects_per_fold is not None:
        subjects_per_fold = check_int("subjects_per_fold", subjects_per_fold, min=1)
    batch_size = check_int("batch_size", batch_size, min=1)
    truth = ground_truth_mask(run)
    brain_img = run_brain_mask(run)
    brain = np.asarray(brain_img.dataobj) > 0
    if truth is not None:
        truth = nib.Nifti1Image(
            on_grid_of(truth, brain_img, interpolation="nearest"), brain_img.affine
        )
    dev = resolve_device(device)
    volumes = run.volumes(progress=progress)
    faithfulness_subjects = _faithfulness_count(run, volumes, faithfulness_subjects)
    sigma = [sigma_mm / v for v in run.grid.voxel_size]
    fill_opts = {"fractions": np.linspace(0, 1, 21), "mask": brain, "batch_size": 32}
    rows_out: list[dict] = []
    pooled: dict[tuple[str, str], dict] = {}  # running class sums over the folds
    checkpoints = run.fold_models()
    bar = tqdm(total=run.n_folds, desc="layers", disable=not progress)
    for k in range(run.n_folds):
        model, _ = model_from_checkpoint(checkpoints[k])
        model.to(dev).eval()
        rows = _sample(run, run.indices(k, "test"), subjects_per_fold, k)
        x = _batch(volumes, rows)  # on the CPU; one batch at a time goes to the device
        found = feature_layers(model, x[:1].to(dev))
        grids = dict(found)
        depth = {name: d for d, (name, _) in enumerate(found)}
        chosen = list(layers) if layers else [name for name, _ in found]
        unknown = [name for name in chosen if name not in grids]
        if unknown:
            raise ConfigError(
                f"layers: {unknown} are not activation or pooling layers of the fold-{k} "
                f"model; choose from {', '.join(grids)}."
            )
        targets = resolve_targets(run, target, rows)
        if isinstance(targets, torch.Tensor):
            targets = targets.to(dev)
        predict = predictor(model, device=dev, task=run.task, batch_size=32)
        explained = _explained(run, model, x, targets, batch_size)
        faith_rows = _sample(run, rows, faithfulness_subjects, k) if faithfulness_subjects else []
        faith_idx = np.searchsorted(rows, faith_rows)
        for method in methods:
            for name in chosen:
                explainer = create_method(method, model, layer=name)
                start = time.perf_counter()
                maps = np.concatenate(
                    [
                        explainer.attribute(
                            x[s : s + batch_size].to(dev), target=_part(targets, s, batch_size)
                        )
                        .float()
                        .cpu()
                        .numpy()
                        for s in range(0, len(rows), batch_size)
                    ]
                )
                seconds = (time.perf_counter() - start) / len(rows)
                fold_sums: dict = {}
                _accumulate(run, fold_sums, maps, rows)
                mean = _conjoined_of_sums(fold_sums)
                _accumulate(run, pooled.setdefault((method, name), {}), maps, rows)
                row = {
                    "method": method, "layer": name, "depth": depth[name],
                    "feature_grid": "x".join(map(str, grids[name])),
                    "min_axis": min(grids[name]), "fold": str(k), "n_subjects": len(rows),
                    "seconds_per_map": seconds, **_scores(run, mean, truth, brain_img),
                }  # fmt: skip
                if len(faith_rows):
                    t = None if explained is None else explained[faith_idx]
                    opts = dict(fill_opts, sigma=sigma)
                    row.update(
                        _faithfulness(predict, volumes, faith_rows, maps[faith_idx], t, opts, seed)
                    )
                row["n_faithfulness"] = len(faith_rows)
                rows_out.append(row)
        bar.update(1)
    bar.close()
    table = pd.DataFrame(rows_out).reindex(columns=COLUMNS)
    table = pd.concat([table, _pooled(run, table, pooled, truth, brain_img)])
    out = run.layout.analysis("layers")
    write_tsv(table.reindex(columns=COLUMNS), out)
    record_stage(
        run, "layers", methods=methods, layers=list(layers) if layers else None,
        target=target, subjects_per_fold=subjects_per_fold,
        faithfulness_subjects=faithfulness_subjects, sigma_mm=sigma_mm, seed=seed,
    )  # fmt: skip
    return out


def _scores(run: RunFolder, mean: np.ndarray, truth, brain_img) -> dict:
    if truth is None:
        return {"roc_auc": np.nan, "relevance_mass": np.nan}
    s = localisation_scores(run.grid.to_img(mean.astype(np.float32)), truth, brain_img)
    return {"roc_auc": s["roc_auc"], "relevance_mass": s["relevance_mass"]}


def _pooled(run, table: pd.DataFrame, pooled: dict, truth, brain_img) -> pd.DataFrame:
    """One ``fold == "all"`` row per method and layer."""
    out = []
    for (method, name), sums in pooled.items():
        part = table[(table["method"] == method) & (table["layer"] == name)]
        mean = _conjoined_of_sums(sums)
        row = part.iloc[0][["method", "layer", "depth", "feature_grid", "min_axis"]].to_dict()
        faith = ["deletion", "deletion_random", "insertion", "insertion_random"]
        n = part["n_faithfulness"].to_numpy()
        avg = {c: float(np.average(part[c], weights=n)) if n.sum() else np.nan for c in faith}
        seconds = float(np.average(part["seconds_per_map"], weights=part["n_subjects"]))
        out.append(
            {
                **row,
                "fold": "all",
                "n_subjects": int(part["n_subjects"].sum()),
                **_scores(run, mean, truth, brain_img),
                **avg,
                "n_faithfulness": int(n.sum()),
                "seconds_per_map": seconds,
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)
