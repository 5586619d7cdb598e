"""The ``roar`` step: remove and retrain, keep and retrain (Hooker et al. 2019).

For each method, fraction and chosen fold, every volume of the run (the fold's training,
validation and test volumes) has a share of its brain voxels replaced, chosen by a
ranking of that volume; a model is trained from scratch on the modified training
volumes with the run's own configuration (the fold checkpoint's model and options, the
run's learning rate, batch size, mixed precision, BatchNorm recalibration, validation
split and seed; only the epochs can be lowered) and scored on the modified test
volumes. The same with a seeded random ranking is the control, and the unmodified
retrain (fraction 0) the reference.
The masks and tables are in :mod:`brainmaps.analysis.roar`.

Choices, and why:

- **Ranking: each volume's own map** (``ranking="subject"``, Hooker et al. rank every
  image by its own explanation). ``maps/<method>/maps.tsv`` holds one map per subject,
  made by the model of the fold in which the subject was a test subject (its ``fold``
  column, checked). Fold ``k``'s test volumes are therefore ranked by the fold-``k``
  model, which never trained on them. Its training volumes are ranked by the other fold
  models, which did train on fold ``k``'s test subjects: the *positions* removed from a
  training volume depend on models that saw the test labels. That is a second-order
  dependence (no test volume or label enters the retrained model), the same for every
  method, and the strict alternative, explaining each fold's training subjects again with
  that fold's model, costs ``n_folds - 1`` times the maps. ``ranking="fold_mean"`` ranks
  every volume of fold ``k`` by one map, the sum of the class means of the maps of the
  subjects outside fold ``k`` (the ``conjoined`` mask of the masked re-evaluation), so
  the replaced voxels cannot differ by class (per-volume masks can carry the label in
  their shape, a known limit of ROAR).
- **Fill: the per-voxel mean of the fold's training volumes** (``fill="train_mean"``,
  train and validation volumes). After retraining, a fill that keeps part of the volume's
  own values (the blur of :mod:`brainmaps.steps.faithfulness`) lets the new model read
  the removed signal back: a planted intensity change survives an 8 mm blur. The
  training mean is the same for every subject at a voxel, so nothing about the subject is
  left there. ``"blur"``, ``"zero"`` and ``"mean"`` (faithfulness' fills) can be chosen.
- **Random control shared by both modes**: replacing a random ``round(f n)`` voxels is
  the control of ROAR and of KAR at fraction ``f``, trained once per fraction and fold.
- **Seeds**: every model of fold ``k`` starts from the same weights and batch order
  (the run's seed ``+ k + random_state``), so models differ only by their inputs; with
  ``random_state=0`` and the run's epochs, the fraction-0 retrain is the run's own fold
  model again. ``random_state`` also seeds the random ranking and the tie breaks; runs
  with other seeds add rows (repeats) to the same tables.

Cost: one training per (method, mode, fraction, fold), plus one per (fraction, fold) for
the random ranking and one per fold for the reference. On the demo grid (36x44x36,
xin2019, 86 training and 10 validation volumes, batch 8), one epoch took about 20 s on
two busy CPU cores, so one method x fraction x fold costs about 20 s per epoch (1.7 min
at ``epochs=5``, 7 min at the run's 20; replacing the voxels of the 120 volumes takes
under a second). While a model trains, a modified copy of every volume is held in memory
(27 MB on the demo; about 1 GB for 1000 volumes of 58x70x58). The step never runs inside
:func:`~brainmaps.reports.analyse.analyse_run` or the demo: its ``skip`` always gives
the command to run it (``brainmaps roar RUN``; :func:`~brainmaps.steps.run_step` or
:func:`roar_run` run it directly).

Resuming: each finished model is a row of ``analysis/roar_folds.tsv`` (written
atomically as soon as it is scored, with the hash of the options that made it and of the
method's ``maps.tsv``); a row with the same key, options and maps is not trained again.
``stages/roar.yaml`` records the options; other options are refused unless
``overwrite``, and their rows stay in ``roar_folds.tsv`` (going back to them resumes).

Summary: ``roar.tsv`` and ``kar.tsv`` are made from the *current* rows only: the options
of the call (epochs, fill, ranking, absolute, sigma), its fractions, and for a method the
hash of its ``maps.tsv`` as it is now. Rows of other options, other fractions or earlier
maps stay in ``roar_folds.tsv`` but never enter the summary. The maps hash is of the
content of ``maps.tsv`` (file names, folds, labels, explained classes, predictions and
seconds of every map), not of file times: a copied run folder keeps its rows, while
explaining a method again (or a part of its subjects) rewrites those rows' measured
seconds and so changes the hash. Rows of other folds and seeds made with the current
options and maps are kept (they are repeats), and every method's value at a fraction is
paired by fold and seed with the random ranking and the unmodified retrain
(:func:`brainmaps.analysis.roar.roar_summary`). Methods not named in the call keep their
current rows in the summary.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainmaps.analysis import roar as R
from brainmaps.analysis.faithfulness import random_attribution
from brainmaps.analysis.maps import list_map_methods, run_brain_mask
from brainmaps.exceptions import BrainmapsError, BrainmapsWarning, ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.lock import run_lock
from brainmaps.run.stages import check_stage, read_stage
from brainmaps.steps.base import Step, needs_maps, record_stage, register_step
from brainmaps.steps.faithfulness import _load, _manifest
from brainmaps.steps.masked_eval import _fold_class_means
from brainmaps.training.retrain import (
    check_folds,
    fold_model_factory,
    fold_training_options,
    retrain_and_score,
)
from brainmaps.utils import stable_hash, write_tsv
from brainmaps.validation import check_choice, check_float, check_int

__all__ = ["DEFAULT_FRACTIONS", "RANKINGS", "SIGMA_MM", "roar_run"]

#: Fractions of the brain voxels replaced (Hooker et al. use 0.1, 0.3, 0.5, 0.7, 0.9).
DEFAULT_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: ``"subject"``: each volume by its own map; ``"fold_mean"``: by the fold's mean map.
RANKINGS = ("subject", "fold_mean")
#: Default blur of the ``"blur"`` fill, in millimetres.
SIGMA_MM = 8.0


@dataclass(frozen=True)
class _Unit:
    method: str
    mode: str
    fraction: float
    fold: int

    def key(self, seed: int) -> tuple:
        return (self.method, self.mode, round(self.fraction, 6), self.fold, seed)


@dataclass
class _Setup:
    """What every unit of one call shares."""

    run: RunFolder
    volumes: object
    brain: np.ndarray
    options: dict
    seed: int
    epochs: int
    device: str
    progress: bool
    files: dict  # method -> {row: map file}
    maps: dict  # method -> hash of its maps.tsv (every method with maps and rows)
    fractions: tuple = ()  # this call's fractions (0 excluded)


def _methods(run: RunFolder, methods: Sequence[str] | None) -> list[str]:
    methods = list(dict.fromkeys(methods or list_map_methods(run)))
    if not methods:
        raise ConfigError(f"no maps in {run.layout.maps_root}; run 'brainmaps explain' first.")
    bad = [m for m in methods if m in (R.RANDOM, R.REFERENCE)]
    if bad:
        raise ConfigError(f"methods {bad} are names of the controls; rename those map folders.")
    return methods


def _covering(run: RunFolder, methods: list[str]) -> list[str]:
    """The methods whose maps cover every subject (the default when none are named).

    The slow methods are often explained on a sample (``--subjects-per-fold``); ROAR ranks
    every volume by its own map, so they are left out with a warning instead of stopping
    the call. Named methods keep the error of :func:`_map_files`.
    """
    n = len(run.table)
    full = [m for m in methods if len(set(_manifest(run, m)["row"].astype(int))) == n]
    left = [m for m in methods if m not in full]
    if not full:
        raise ConfigError(
            f"no method's maps cover every subject of {run.path}; run 'brainmaps explain "
            f"{run.path} --methods M' without --subjects-per-fold, or use --ranking fold_mean."
        )
    if left:
        warnings.warn(
            f"roar: {', '.join(left)} left out: their maps cover only some subjects (ROAR "
            "ranks every volume by its own map); explain them for every subject and name "
            "them with --methods, or use --ranking fold_mean.",
            BrainmapsWarning,
            stacklevel=3,
        )
    return full


def _fractions(fractions: Sequence[float]) -> list[float]:
    """Sorted, unique, in (0, 1); a 0 is dropped (the reference is always trained)."""
    values = sorted({round(float(f), 6) for f in fractions} - {0.0})
    if not values or not all(0 < f < 1 for f in values):  # also refuses nan
        raise ConfigError(
            f"fractions must lie strictly between 0 and 1, got {list(fractions)}; fraction "
            "0 (the unmodified retrain) is always added, e.g. 0.1,0.3,0.5,0.7,0.9."
        )
    return values


def _map_files(run: RunFolder, method: str, ranking: str) -> tuple[dict, str]:
    """``{row: file}`` of the method's maps and the hash of its ``maps.tsv``."""
    manifest = _manifest(run, method)
    rows = dict(zip(manifest["row"].astype(int), manifest["file"], strict=True))
    missing = sorted(set(range(len(run.table))) - set(rows))
    if ranking == "subject" and missing:
        raise ConfigError(
            f"maps of {method} cover {len(rows)} of {len(run.table)} subjects; ROAR ranks "
            f"every training and test volume by its own map. Run 'brainmaps explain "
            f"{run.path} --methods {method}' without --subjects-per-fold, or use "
            "ranking='fold_mean'."
        )
    return rows, _maps_hash(manifest)


def _maps_hash(manifest: pd.DataFrame) -> str:
    """Hash of the content of a method's ``maps.tsv`` (see the module docstring)."""
    return stable_hash(manifest.drop(columns="row").astype(str).to_dict("records"))


def _other_maps(run: RunFolder, units: pd.DataFrame, maps: dict) -> dict:
    """``maps`` with the hash of every other method of ``units`` that still has maps."""
    maps = dict(maps)
    for method in dict.fromkeys(units["method"].astype(str)):
        if method in maps or method in (R.RANDOM, R.REFERENCE):
            continue
        try:
            maps[method] = _maps_hash(_manifest(run, method))
        except BrainmapsError:  # no maps any more, or maps no longer of this run
            continue
    return maps


def _read_units(run: RunFolder) -> pd.DataFrame:
    path = run.layout.analysis("roar_folds")
    if not path.is_file():
        return pd.DataFrame(columns=R.UNIT_COLUMNS)
    table = pd.read_csv(path, sep="\t", dtype={"method": str, "mode": str, "options": str,
                                               "maps": str}, keep_default_na=False)  # fmt: skip
    return table.reindex(columns=R.UNIT_COLUMNS)


def _plan(methods, modes, fractions, folds) -> list[_Unit]:
    """Per fold: the reference, then per fraction the random ranking and each method."""
    units = []
    for k in folds:
        units.append(_Unit(R.REFERENCE, "none", 0.0, k))
        for f in fractions:
            units.append(_Unit(R.RANDOM, "both", f, k))
            units += [_Unit(m, mode, f, k) for m in methods for mode in modes]
    return units


def _current(units: pd.DataFrame, setup: _Setup) -> np.ndarray:
    """Rows made with this call's options and fractions and each method's current maps."""
    if units.empty:
        return np.zeros(0, dtype=bool)
    method = units["method"].astype(str)
    expected = method.map(lambda m: "" if m in (R.RANDOM, R.REFERENCE) else setup.maps.get(m))
    fraction = units["fraction"].astype(float).round(6)
    return (
        (units["options"].astype(str) == stable_hash(setup.options)).to_numpy()
        & (units["maps"].astype(str) == expected).to_numpy()
        & fraction.isin([0.0, *setup.fractions]).to_numpy()
    )


def _done(units: pd.DataFrame, setup: _Setup) -> set:
    """Keys of the finished rows made with this call's options and maps."""
    current = stable_hash(setup.options)
    return {
        (r.method, r.mode, round(float(r.fraction), 6), int(r.fold), int(r.seed))
        for r in units.itertuples(index=False)
        if str(r.options) == current and str(r.maps) == setup.maps.get(r.method, "")
    }


class _Fold:
    """Indices, fill, model factory and training options of one fold (as
    :func:`~brainmaps.training.retrain.retrain_fold` trains it)."""

    def __init__(self, setup: _Setup, k: int) -> None:
        run = setup.run
        self.k = k
        self.train, self.val = run.indices(k, "train"), run.indices(k, "val")
        self.test = run.indices(k, "test")
        fill = setup.options["fill"]
        self.mean = R.training_mean(setup.volumes, run.indices(k, "fit")) if (
            fill == "train_mean") else None  # fmt: skip
        self.make_model = fold_model_factory(run, k)
        self.training = fold_training_options(run, k, epochs=setup.epochs,
                                              random_state=setup.seed)  # fmt: skip
        self.fold_means: dict[str, np.ndarray] = {}


def _attribution(setup: _Setup, fold: _Fold, unit: _Unit, i: int) -> np.ndarray:
    if unit.method == R.RANDOM:
        noise = random_attribution(setup.brain.shape, [setup.seed, i])
        sigma_mm = setup.options.get("random_sigma_mm", 0.0)
        if not sigma_mm:
            return noise
        sigma = [sigma_mm / v for v in setup.run.grid.voxel_size]
        return R.smooth_random(noise, sigma)
    if setup.options["ranking"] == "subject":
        return _load(setup.run, unit.method, setup.files[unit.method][i])
    if unit.method not in fold.fold_means:
        means = _fold_class_means(setup.run, unit.method)[fold.k]
        fold.fold_means[unit.method] = np.sum(list(means.values()), axis=0)
    return fold.fold_means[unit.method]


def _modified(setup: _Setup, fold: _Fold, unit: _Unit):
    """The run's volumes with the unit's voxels replaced (unmodified for the reference)."""
    if unit.method == R.REFERENCE:
        return setup.volumes
    return R.modified_volumes(
        setup.volumes,
        lambda i: _attribution(setup, fold, unit, i),
        setup.brain,
        unit.fraction,
        "roar" if unit.method == R.RANDOM else unit.mode,
        fill=setup.options["fill"],
        mean=fold.mean,
        sigma=[(setup.options["sigma_mm"] or 0.0) / v for v in setup.run.grid.voxel_size],
        absolute=setup.options["absolute"],
        random_state=setup.seed,
    )


def _train_unit(setup: _Setup, fold: _Fold, unit: _Unit) -> dict:
    score = retrain_and_score(
        fold.make_model, _modified(setup, fold, unit), setup.run.labels, fold.train,
        fold.val, fold.test, **fold.training, device=setup.device, progress=setup.progress,
        desc=f"roar {unit.method} {unit.mode} {unit.fraction:g} fold {fold.k}",
    )  # fmt: skip
    return {
        "method": unit.method, "mode": unit.mode, "fraction": unit.fraction,
        "fold": fold.k, "seed": setup.seed, "n_train": len(fold.train),
        "n_val": len(fold.val), "n_test": len(fold.test), "epochs": setup.epochs,
        "best_epoch": score["best_epoch"], "accuracy": score["accuracy"],
        "balanced_accuracy": score["balanced_accuracy"], "roc_auc": score["roc_auc"],
        "seconds": score["seconds"], "options": stable_hash(setup.options),
        "maps": setup.maps.get(unit.method, ""),
    }  # fmt: skip


def _write(setup: _Setup, units: pd.DataFrame) -> None:
    """The per-fold rows, then the ROAR and KAR tables made from them (atomic writes)."""
    order = ["fold", "seed", "fraction"]
    units = units.sort_values(order, kind="stable").reset_index(drop=True)
    write_tsv(units[R.UNIT_COLUMNS], setup.run.layout.analysis("roar_folds"))
    _write_summaries(setup, units)


def _write_summaries(setup: _Setup, units: pd.DataFrame) -> None:
    """``roar.tsv`` and ``kar.tsv`` of the current rows; a table that would not change is
    left as it is (its time stays that of the models it summarises)."""
    current = units[_current(units, setup)] if len(units) else units
    for mode in R.MODES:
        path = setup.run.layout.analysis(mode)
        summary = R.roar_summary(current, mode)
        if not len(summary) and not path.is_file():
            continue
        text = summary.to_csv(sep="\t", index=False, float_format="%.6g")
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        write_tsv(summary, path)


def _same(units: pd.DataFrame, unit: _Unit, setup: _Setup) -> np.ndarray:
    """Rows of ``units`` with the key and options of ``unit`` (earlier maps are replaced;
    rows of other options stay)."""
    return (
        (units["options"].astype(str) == stable_hash(setup.options)).to_numpy()
        & (units["method"].astype(str) == unit.method).to_numpy()
        & (units["mode"].astype(str) == unit.mode).to_numpy()
        & (units["fold"].astype(int) == unit.fold).to_numpy()
        & (units["seed"].astype(int) == setup.seed).to_numpy()
        & np.isclose(units["fraction"].astype(float), unit.fraction)
    )


def _train_all(setup: _Setup, units: pd.DataFrame, todo: list[_Unit]) -> None:
    """Train the pending units fold by fold, writing the tables after each one."""
    bar = tqdm(total=len(todo), desc="roar", disable=not setup.progress)
    for k in sorted({u.fold for u in todo}):
        fold = _Fold(setup, k)
        for unit in (u for u in todo if u.fold == k):
            row = pd.DataFrame([_train_unit(setup, fold, unit)])
            kept = units[~_same(units, unit, setup)]
            units = pd.concat([kept, row], ignore_index=True) if len(kept) else row
            _write(setup, units)
            bar.update(1)
    bar.close()


def roar_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    folds: Sequence[int] | None = None,
    epochs: int | None = None,
    mode: str = "both",
    fill: str = "train_mean",
    ranking: str = "subject",
    absolute: bool = False,
    sigma_mm: float = SIGMA_MM,
    random_sigma_mm: float = 0.0,
    random_state: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Remove and retrain (ROAR) and keep and retrain (KAR) of every method's maps.

    See the module docstring for the ranking, the fill, the seeds and the cost.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A classification run folder with maps of every subject.
    methods : sequence of str, optional
        Map folders (default: every method with maps).
    fractions : sequence of float
        Shares of the brain voxels replaced, strictly between 0 and 1; fraction 0 (the
        unmodified retrain) is always added.
    folds : sequence of int, optional
        Folds to retrain (default: all).
    epochs : int, optional
        Training epochs of every retrained model (default: the run's).
    mode : {"both", "roar", "kar"}
    fill : {"train_mean", "blur", "zero", "mean"}
        What replaced voxels become (:func:`brainmaps.analysis.roar.fill_like`).
    ranking : {"subject", "fold_mean"}
    absolute : bool
        Rank by ``|map|`` (default: the signed values, highest first).
    sigma_mm : float
        Blur of the ``"blur"`` fill in millimetres (ignored by the other fills).
    random_sigma_mm : float
        Smooth the random ranking's white noise by a Gaussian of this sigma in mm before
        ranking, so the control removes compact blobs like a smooth map does instead of
        scattered voxels (0, the default: Hooker et al.'s scattered voxels). Scattered
        removal is harsher for a CNN than removing compact regions of the same size.
    random_state : int
        Seed of the random ranking and tie breaks, added to the training seed.
    overwrite : bool
        Recompute when the options differ from ``stages/roar.yaml`` instead of refusing.
    device : {"auto", "cpu", "cuda"}
    progress : bool

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/roar.tsv`` (``kar.tsv`` for ``mode="kar"``), with
        :data:`brainmaps.analysis.roar.SUMMARY_COLUMNS` (``method, mode, fraction,
        accuracy, accuracy_random, roc_auc, roc_auc_random, accuracy_reference, drop,
        drop_random, ...``, fraction 0 first, paired by fold and seed); ``kar.tsv`` holds
        KAR's rows and ``roar_folds.tsv`` one row per trained model. Both summaries are
        made from the rows of this call's options, fractions and current maps only (see
        the module docstring).
    """
    run = open_run(run_dir)
    if not run.task.is_classification:
        raise ConfigError("ROAR needs a classification run (accuracy); this one regresses.")
    given = methods
    methods, fractions = _methods(run, methods), _fractions(fractions)
    folds = check_folds(run, folds)
    modes = list(R.MODES) if mode == "both" else [check_choice("mode", mode, R.MODES)]
    options = {
        "epochs": check_int("epochs", run.config.training.epochs if epochs is None else epochs,
                            min=1),
        "fill": check_choice("fill", fill, R.FILLS),
        "ranking": check_choice("ranking", ranking, RANKINGS),
        "absolute": bool(absolute),
        "sigma_mm": check_float("sigma_mm", sigma_mm, min=0.0, min_open=True)
        if fill == "blur" else None,
    }  # fmt: skip
    random_sigma_mm = check_float("random_sigma_mm", random_sigma_mm, min=0.0)
    if random_sigma_mm > 0:  # recorded only when used: earlier rows keep their hash
        options["random_sigma_mm"] = random_sigma_mm
    seed = check_int("random_state", random_state, min=0)
    if given is None and options["ranking"] == "subject":
        methods = _covering(run, methods)
    layout = run.layout
    files, maps = {}, {}
    for m in methods:
        files[m], maps[m] = _map_files(run, m, options["ranking"])
    with run_lock(layout.lock, "brainmaps roar"):
        reuse = check_stage(
            layout.stage_record("roar"), str(layout.analysis("roar")), options, overwrite=overwrite,
            hint="copy the run folder to keep both",
        )  # fmt: skip
        units = _read_units(run)  # rows of other options stay (resumable), never summarised
        if not reuse or read_stage(layout.stage_record("roar")) is None:
            record_stage(run, "roar", **options)
        brain = np.asarray(run_brain_mask(run).dataobj) > 0
        setup = _Setup(run, None, brain, options, seed, options["epochs"], device, progress,
                       files, _other_maps(run, units, maps), tuple(fractions))  # fmt: skip
        done = _done(units, setup)
        todo = [u for u in _plan(methods, modes, fractions, folds) if u.key(seed) not in done]
        if todo:
            setup.volumes = run.volumes(progress=progress)
            _train_all(setup, units, todo)
        else:
            _write_summaries(setup, units)
    return layout.analysis(modes[0])


def _compute(run: RunFolder, methods: list[str], options: dict) -> Path:
    return roar_run(
        run,
        methods,
        fractions=options.get("roar_fractions", DEFAULT_FRACTIONS),
        folds=options.get("roar_folds"),
        epochs=options.get("roar_epochs"),
        device=options.get("device", "auto"),
        progress=options.get("progress", True),
    )


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    """Why ``analyse_run`` does not run it: it retrains models (minutes to hours)."""
    if not run.task.is_classification:
        return "classification runs only"
    reason = needs_maps(run, methods, options)
    if reason:
        return reason
    again = " again to update it" if run.layout.analysis("roar").is_file() else ""
    return (
        f"retrains one model per method, fraction and fold; run `brainmaps roar "
        f"{run.path}`{again} (--folds-subset, --epochs and --fractions bound its cost)"
    )


STEP = register_step(
    Step(
        name="roar",
        order=55,
        command="brainmaps roar",
        output=lambda run, options: run.layout.analysis("roar"),
        compute=_compute,
        skip=_skip,
    )
)
