"""Re-evaluate a run's fold models on perturbed inputs: faithfulness curves.

Out-of-fold: every subject goes only through the model of the fold
in which it was a test subject. The torch side is here (loading the fold models and
turning them into NumPy ``predict`` callables); the curves and areas are computed by
the torch-free :mod:`brainmaps.analysis.faithfulness`. The mask-restricted
re-evaluation is in :mod:`brainmaps.steps.masked_eval`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainmaps.analysis.faithfulness import MODES, curve_auc, deletion_curve, fill_volume
from brainmaps.analysis.faithfulness import random_attribution as _random_map
from brainmaps.analysis.maps import list_map_methods, run_brain_mask
from brainmaps.exceptions import ConfigError, DataLeakageError, ShapeError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import predictor
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step
from brainmaps.utils import write_tsv

__all__ = ["faithfulness_run", "fold_predictor", "subject_curves"]


#: Former name of :func:`brainmaps.models.predict.predictor` (the one predict path).
fold_predictor = predictor


def _fold_predictors(run: RunFolder, device: str, batch_size: int):
    """Yield ``(fold, predict)`` for every fold, one model in memory at a time."""
    checkpoints = run.fold_models()
    dev = resolve_device(device)
    for k in range(run.n_folds):
        model, _ = model_from_checkpoint(checkpoints[k])
        model.to(dev)  # predictor restores the model's device: keep it there between calls
        yield k, predictor(model, device=dev, task=run.task, batch_size=batch_size)


def _manifest(run: RunFolder, method: str) -> pd.DataFrame:
    """``maps.tsv`` of a method with a ``row`` column (index into ``run.table``)."""
    path = run.layout.maps_manifest(method)
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: no maps of method {method!r}; run 'brainmaps explain "
            f"{run.path} --methods {method}' first (found: {list_map_methods(run)})."
        )
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})
    table["session"] = table["session"].fillna("")
    keys = run.table[["subject", "session"]].astype(str).reset_index(drop=True)
    keys["row"] = np.arange(len(keys))
    table = table.merge(keys, on=["subject", "session"], how="left")
    table["row"] = table["row"].fillna(-1).astype(int)
    unknown = table.loc[table["row"] < 0, "subject"].tolist()
    if unknown:
        raise ConfigError(
            f"{path} lists subjects not in the run's {run.layout.cohort.name}: {unknown[:5]}."
        )
    test_fold = run.table["test_fold"].to_numpy()[table["row"]]
    if np.any(test_fold != table["fold"].to_numpy()):
        raise DataLeakageError(
            f"{path}: some maps were made by a fold model that trained on their subject "
            "(fold column != the subject's test fold); re-run 'brainmaps explain'."
        )
    return table


def _load(run: RunFolder, method: str, file: str) -> np.ndarray:
    """One map of a method as float32, checked against the run grid."""
    path = run.layout.maps_dir(method) / file
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.shape != tuple(run.grid.shape):
        raise ShapeError(
            f"map {path} has shape {data.shape}, the run grid "
            f"is {tuple(run.grid.shape)}; maps must be written on the run grid."
        )
    return data


def _subsample(run: RunFolder, rows: np.ndarray, n_subjects: int | None, seed: int) -> dict:
    """Rows per fold; ``n_subjects`` spread over the folds in proportion to their size."""
    folds = run.table["test_fold"].to_numpy()[rows]
    per_fold = {k: rows[folds == k] for k in range(run.n_folds)}
    if n_subjects is None or n_subjects >= len(rows):
        return per_fold
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise ConfigError(f"n_subjects must be a positive integer or None, got {n_subjects!r}.")
    share = np.array([len(per_fold[k]) for k in range(run.n_folds)]) * n_subjects / len(rows)
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share, kind="stable")[: n_subjects - counts.sum()]] += 1
    rng = np.random.default_rng(seed)
    return {k: np.sort(rng.permutation(per_fold[k])[: counts[k]]) for k in per_fold}


def _targets(run: RunFolder, manifest: pd.DataFrame) -> dict[int, int | None]:
    if not run.task.is_classification:
        return dict.fromkeys(manifest["row"], None)
    names = manifest["explained"].astype(str)
    bad = sorted(set(names) - set(run.classes))
    if bad:
        raise ConfigError(
            f"{run.layout.MAPS_MANIFEST} 'explained' holds {bad}, not classes {run.classes}."
        )
    return {r: run.classes.index(n) for r, n in zip(manifest["row"], names, strict=True)}


def faithfulness_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    n_subjects: int | None = None,
    fill: str = "blur",
    steps: int = 20,
    sigma_mm: float = 8.0,
    random_state: int = 0,
    device: str = "auto",
    batch_size: int = 32,
    progress: bool = True,
) -> Path:
    """Deletion and insertion curves of every method's maps, against a random ranking.

    Each subject's own map (``<run>/maps/<method>/``, listed in ``maps.tsv``) ranks its
    voxels inside the run's brain mask; its volume is perturbed step by step and the
    model of its test fold (the one that did not train on it) gives the probability of
    the class the map explained (``explained`` column; the output for regression).
    See :mod:`brainmaps.analysis.faithfulness` (Petsiuk et al. 2018; Samek et al. 2017).
    The control ranks the same voxels at random (seeded per subject) and follows the
    class explained by the first method's map.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder with maps.
    methods : sequence of str, optional
        Map folders to score (default: every method with maps).
    n_subjects : int, optional
        Score a seeded random subset of this size, spread over the folds in proportion
        to their size (default: every subject with maps of all methods).
    fill : {"blur", "zero", "mean"}
        What removed voxels become (see :func:`~brainmaps.analysis.faithfulness.fill_volume`).
    steps : int
        Curve steps (20: every 5 % of the brain voxels).
    sigma_mm : float
        Blur of the ``"blur"`` fill in millimetres.
    random_state : int
        Seed of the subset, the random maps and the tie breaks.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Volumes per forward pass.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/faithfulness.tsv`` (``method, mode, fill, auc, auc_random,
        auc_std, n_subjects``: mean and std over subjects of each subject's area, one row
        per method and mode plus the ``random`` control rows); the mean curves go to
        ``faithfulness_curves.tsv`` (``method, mode, fraction, probability``).
    """
    run = open_run(run_dir)
    methods = list(dict.fromkeys(methods or list_map_methods(run)))
    if not methods:
        raise ConfigError(f"no maps in {run.layout.maps_root}; run 'brainmaps explain' first.")
    manifests = {m: _manifest(run, m) for m in methods}
    targets = {m: _targets(run, manifests[m]) for m in methods}
    rows = np.array(sorted(set.intersection(*(set(t) for t in targets.values()))), dtype=int)
    if len(rows) == 0:
        raise ConfigError(f"no subject has maps of every method {methods}.")
    chosen = _subsample(run, rows, n_subjects, random_state)
    files = {m: dict(zip(manifests[m]["row"], manifests[m]["file"], strict=True)) for m in methods}
    mask = np.asarray(run_brain_mask(run).dataobj) > 0
    sigma = [sigma_mm / v for v in run.grid.voxel_size]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
    fractions = np.linspace(0.0, 1.0, steps + 1)
    volumes = run.volumes(progress=progress)
    if len(volumes) and np.ndim(volumes[0]) == 4 and np.shape(volumes[0])[0] > 1:
        raise ConfigError(
            f"run {run.path} has {np.shape(volumes[0])[0]} input channels; deletion and "
            "insertion curves are implemented for one-channel runs only. Use masked-eval, "
            "compare or localise on this run."
        )
    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    bar = tqdm(
        total=sum(len(v) for v in chosen.values()), desc="faithfulness", disable=not progress
    )
    opts = {"fractions": fractions, "mask": mask, "batch_size": batch_size}
    for k, predict in _fold_predictors(run, device, batch_size):
        for i in chosen[k]:
            x = np.asarray(volumes[int(i)], dtype=np.float32)
            opts["fill"] = fill_volume(x, fill, sigma=sigma, mask=mask)
            opts["random_state"] = [random_state, int(i)]
            maps = {m: (_load(run, m, files[m][i]), targets[m][i]) for m in methods}
            maps["random"] = (_random_map(x.shape, opts["random_state"]), targets[methods[0]][i])
            for (m, mode), p in subject_curves(predict, x, maps, opts).items():
                curves.setdefault((m, mode), []).append(p)
            bar.update(1)
    bar.close()
    out = _write_faithfulness(run, curves, fractions, fill)
    record_stage(
        run, "faithfulness", methods=methods, n_subjects=n_subjects, fill=fill, steps=steps,
        sigma_mm=sigma_mm, random_state=random_state,
    )  # fmt: skip
    return out


def subject_curves(predict, x: np.ndarray, maps: dict, opts: dict) -> dict:
    """``{(method, mode): probabilities}`` of one subject; ``maps`` holds (map, target)."""
    return {
        (m, mode): deletion_curve(predict, x, a, t, mode=mode, **opts)[1]
        for m, (a, t) in maps.items()
        for mode in MODES
    }


def _write_faithfulness(run: RunFolder, curves: dict, fractions: np.ndarray, fill: str) -> Path:
    rows, curve_rows = [], []
    for (method, mode), ps in curves.items():
        ps = np.stack(ps)
        auc = np.array([curve_auc(fractions, p) for p in ps])
        rnd = np.mean([curve_auc(fractions, p) for p in curves[("random", mode)]])
        std = auc.std(ddof=1) if len(auc) > 1 else np.nan
        rows.append([method, mode, fill, auc.mean(), rnd, std, len(auc)])
        curve_rows += [[method, mode, f, p] for f, p in zip(fractions, ps.mean(0), strict=True)]
    columns = ["method", "mode", "fill", "auc", "auc_random", "auc_std", "n_subjects"]
    out = run.layout.analysis("faithfulness")
    write_tsv(pd.DataFrame(rows, columns=columns), out)
    curve_table = pd.DataFrame(curve_rows, columns=["method", "mode", "fraction", "probability"])
    write_tsv(curve_table, run.layout.analysis("faithfulness_curves"))
    return out


STEP = register_step(
    Step(
        name="faithfulness",
        order=40,
        command="brainmaps faithfulness",
        output=lambda run, options: run.layout.analysis("faithfulness"),
        compute=lambda run, methods, options: faithfulness_run(
            run,
            methods,
            n_subjects=options.get("faithfulness_subjects", 40),
            device=options.get("device", "auto"),
            progress=options.get("progress", True),
        ),
    )
)
