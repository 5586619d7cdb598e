"""Mask-restricted re-evaluation (Kan et al. 2020, section 4.3).

Every out-of-fold test volume is multiplied by a class-mean attribution mask (of each
class and of their sum) and classified again by its own fold model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainmaps.analysis.maps import class_mean_maps, list_map_methods, run_brain_mask
from brainmaps.analysis.overlap import binarize
from brainmaps.evaluation.metrics import classification_metrics, summarize_folds
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, needs_maps, record_stage, register_step
from brainmaps.steps.faithfulness import _fold_predictors, _load, _manifest
from brainmaps.utils import write_tsv

__all__ = ["WEIGHTINGS", "mask_weights", "masked_eval", "masked_eval_run"]

WEIGHTINGS = ("continuous", "binary")
_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


def masked_eval(
    run_dir: str | os.PathLike | RunFolder,
    masks: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    *,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Fold metrics of the run's models on their test volumes multiplied by masks.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A classification run folder.
    masks : mapping of str to array or sequence of arrays
        Mask name to a weight volume on the run grid (used for every fold) or a list of
        one volume per fold (fold ``k``'s test volumes are multiplied by ``masks[k]``).
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Volumes per forward pass.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        ``mask, fold, n_test, accuracy, balanced_accuracy, roc_auc``: one row per mask
        and fold, then the ``mean`` and ``std`` rows of each mask.
    """
    run = open_run(run_dir)
    if not run.task.is_classification:
        raise ConfigError("masked evaluation needs a classification run (accuracy).")
    per_fold = {name: _per_fold(run, name, w) for name, w in masks.items()}
    volumes = run.volumes(progress=progress)
    rows = []
    folds = tqdm(
        _fold_predictors(run, device, batch_size),
        total=run.n_folds,
        desc="masked eval",
        disable=not progress,
    )
    for k, predict in folds:
        idx = run.indices(k, "test")
        x = np.stack([np.asarray(volumes[int(i)], dtype=np.float32) for i in idx])
        for name, weights in per_fold.items():
            m = classification_metrics(run.labels[idx], predict(x * weights[k]))
            rows.append(
                {"mask": name, "fold": str(k), "n_test": len(idx), **{c: m[c] for c in _METRICS}}
            )
    table = pd.DataFrame(rows)
    return pd.concat(
        [
            summarize_folds(table[table["mask"] == n].drop(columns="mask")).assign(mask=n)
            for n in masks
        ],
        ignore_index=True,
    )[["mask", "fold", "n_test", *_METRICS]]


def _per_fold(run: RunFolder, name: str, weights) -> list[np.ndarray]:
    arrays = [weights] if isinstance(weights, np.ndarray) else list(weights)
    if len(arrays) == 1:
        arrays = arrays * run.n_folds
    shape = tuple(run.grid.shape)
    if len(arrays) != run.n_folds or any(np.shape(a) != shape for a in arrays):
        raise ShapeError(
            f"mask {name!r} must be one array of shape {shape} or {run.n_folds} of them "
            f"(one per fold), got {[np.shape(a) for a in arrays]}."
        )
    return [np.asarray(a, dtype=np.float32) for a in arrays]


def _scale(data: np.ndarray, what: str) -> np.ndarray:
    lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        raise ConfigError(f"{what} is constant ({lo}); it cannot be min-max scaled to a mask.")
    return ((data - lo) / (hi - lo)).astype(np.float32)


def _fold_class_means(run: RunFolder, method: str) -> list[dict[str, np.ndarray]]:
    """Per fold: class means of the maps of the subjects outside its test set."""
    manifest = _manifest(run, method)
    labels = run.labels[manifest["row"].to_numpy()]
    shape = tuple(run.grid.shape)
    total = np.zeros((len(run.classes), *shape))
    fold_sum = np.zeros((run.n_folds, len(run.classes), *shape))
    count = np.zeros((run.n_folds, len(run.classes)))
    for f, c, k in zip(manifest["file"], labels, manifest["fold"], strict=True):
        data = _load(run, method, f)
        total[c] += data
        fold_sum[k, c] += data
        count[k, c] += 1
    outside = count.sum(axis=0) - count
    if np.any(outside == 0):
        raise ConfigError(
            f"maps of {method}: some fold has no training subject of some class "
            f"(counts outside each test fold: {outside.tolist()}); use fold_means=False."
        )
    return [
        {
            run.classes[c]: (total[c] - fold_sum[k, c]) / outside[k, c]
            for c in range(len(run.classes))
        }
        for k in range(run.n_folds)
    ]


def mask_weights(
    run_dir: str | os.PathLike | RunFolder,
    method: str,
    *,
    weighting: str = "continuous",
    threshold: str | float = "top10%",
    fold_means: bool = True,
) -> dict[str, list[np.ndarray]]:
    """The masks of Kan et al. §4.3 from a method's class-mean maps, per fold.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A classification run with maps of ``method``.
    method : str
    weighting : {"continuous", "binary"}
        ``"continuous"``: the class-mean map min-max scaled to [0, 1] (the paper);
        ``"binary"``: :func:`brainmaps.analysis.overlap.binarize` inside the brain mask.
    threshold : str or float
        Threshold of the ``"binary"`` weighting.
    fold_means : bool
        ``True`` (default, honest): fold ``k``'s masks average the maps of the subjects
        outside its test set. ``False``: the pooled ``mean_<class>.nii.gz`` of the run,
        which also average fold ``k``'s test subjects (the paper; leaks).

    Returns
    -------
    dict of str to list of numpy.ndarray
        ``none`` (ones), one key per class and ``conjoined`` (the sum of the class
        means), each a list of one weight volume per fold.
    """
    run = open_run(run_dir)
    if not run.task.is_classification:
        raise ConfigError(f"{run.path} is a regression run; class-mean masks need classes.")
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    if fold_means:
        means = _fold_class_means(run, method)
    else:
        pooled = {n: np.asarray(img.dataobj) for n, img in class_mean_maps(run, method).items()}
        means = [{c: pooled[c] for c in run.classes}] * run.n_folds
    brain = run_brain_mask(run)
    out: dict[str, list[np.ndarray]] = {"none": [np.ones(run.grid.shape, np.float32)] * run.n_folds}
    for name in run.task.map_names():
        out[name] = []
        for k in range(run.n_folds):
            data = sum(means[k].values()) if name == run.task.combined_map() else means[k][name]
            if weighting == "continuous":
                out[name].append(_scale(np.asarray(data), f"class-mean map {name} of {method}"))
            else:
                img = run.grid.to_img(np.asarray(data, dtype=np.float32))
                out[name].append(binarize(img, brain, threshold, method=method).astype(np.float32))
    return out


def masked_eval_run(
    run_dir: str | os.PathLike | RunFolder,
    method: str,
    *,
    weighting: str = "continuous",
    threshold: str | float = "top10%",
    fold_means: bool = True,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """Mask-restricted re-evaluation (Kan et al. 2020 §4.3), written to the run folder.

    Every out-of-fold test volume is multiplied by the mask of each class's mean map,
    of their sum (``conjoined``) and by ones (``none``, the reference, which reproduces
    the run's own metrics), and the fold model classifies it again. Kan et al. report
    accuracies of 0.59 (men's mask), 0.59 (women's) and 0.82 (conjoined).

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
    method : str
        Map folder under ``<run>/maps/``.
    weighting, threshold, fold_means
        See :func:`mask_weights`.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
    progress : bool

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/masked_eval.tsv``: ``method, mask, weighting, fold, n_test,
        accuracy, balanced_accuracy, roc_auc, means`` (``means`` is ``fold`` or
        ``pooled``). New rows replace those of the same method and settings.
    """
    run = open_run(run_dir)
    masks = mask_weights(
        run, method, weighting=weighting, threshold=threshold, fold_means=fold_means
    )
    table = masked_eval(run, masks, device=device, batch_size=batch_size, progress=progress)
    table.insert(0, "method", method)
    table.insert(2, "weighting", weighting)
    table["means"] = "fold" if fold_means else "pooled"
    out = run.layout.analysis("masked_eval")
    if out.is_file():
        old = pd.read_csv(out, sep="\t", dtype={"fold": str})
        key = ["method", "weighting", "means"]
        same = (
            old[key].eq(table[key].iloc[0]).all(axis=1) if set(key) <= set(old) else old.index >= 0
        )
        table = pd.concat([old[~same], table], ignore_index=True)
    write_tsv(table, out)
    means = "fold" if fold_means else "pooled"
    record_stage(
        run, f"masked_eval-{method}-{weighting}-{means}", method=method, weighting=weighting,
        threshold=threshold, fold_means=fold_means,
    )  # fmt: skip
    return out


def masked_eval_methods(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    weighting: str = "continuous",
    **options,
) -> Path:
    """:func:`masked_eval_run` for several methods; ``weighting="both"`` runs each weighting.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
    methods : sequence of str, optional
        Default: every method with maps.
    weighting : {"continuous", "binary", "both"}
    **options
        Passed on to :func:`masked_eval_run` (threshold, fold_means, device, ...).

    Returns
    -------
    pathlib.Path
        ``analysis/masked_eval.tsv``.
    """
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    if not methods:
        raise ConfigError(f"no maps in {run.layout.maps_root}; run 'brainmaps explain' first.")
    weightings = list(WEIGHTINGS) if weighting == "both" else [weighting]
    path = None
    for method in methods:
        for w in weightings:
            path = masked_eval_run(run, method, weighting=w, **options)
    return path


def _compute(run: RunFolder, methods: list[str], options: dict) -> Path:
    return masked_eval_methods(
        run, methods, device=options.get("device", "auto"), progress=options.get("progress", True)
    )


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    if not run.task.is_classification:
        return "classification runs only"
    return needs_maps(run, methods, options)


STEP = register_step(
    Step(
        name="masked_eval",
        order=50,
        command="brainmaps masked-eval",
        output=lambda run, options: run.layout.analysis("masked_eval"),
        compute=_compute,
        skip=_skip,
    )
)
