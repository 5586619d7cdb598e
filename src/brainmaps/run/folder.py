"""Read a run folder written by ``brainmaps train``: config, table, folds, task, volumes.

Every later stage (attribution, baselines, analysis, reports) starts from a run folder;
this module reads it without importing torch, so any stage can use it. Paths come from
:class:`~brainmaps.run.layout.RunLayout`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from brainmaps.data.cache import CachedVolumes
from brainmaps.data.channels import channel_names
from brainmaps.data.preprocess import Grid, PreprocessConfig
from brainmaps.data.stacked import StackedVolumes, cache_channels
from brainmaps.exceptions import ConfigError
from brainmaps.run.config import ExecutionConfig, RunConfig
from brainmaps.run.layout import RunLayout
from brainmaps.tasks import Task, get_task

__all__ = ["RunFolder", "open_run", "read_execution", "write_execution"]


@dataclass(frozen=True)
class RunFolder:
    """The contents of a run folder, read once.

    Attributes
    ----------
    path : pathlib.Path
        The run folder.
    config : RunConfig
        ``config.yaml``, validated, with the execution settings of ``execution.yaml``;
        keys an older brainmaps did not write take the value the run was trained with
        (:data:`brainmaps.run.config.SAVED_DEFAULTS`).
    table : pandas.DataFrame
        ``cohort.tsv``: one row per scan (``subject``, ``session``, ``path``, ``label``,
        ``y``, ``site``, ..., ``cache_slot``, ``test_fold``). Row ``i`` is volume ``i`` of
        :meth:`volumes`.
    folds : pandas.DataFrame
        ``folds.tsv`` in long format: ``fold``, ``subject``, ``session``, ``role``
        (``train`` / ``val`` / ``test``), one block of rows per fold in table order.
    task : Task
        What the run predicts (:class:`~brainmaps.tasks.Classification` with the class
        names, or :class:`~brainmaps.tasks.Regression`); ``task == "regression"`` works.
    """

    path: Path
    config: RunConfig
    table: pd.DataFrame
    folds: pd.DataFrame
    task: Task

    @property
    def layout(self) -> RunLayout:
        """RunLayout : Every path of the run folder."""
        return RunLayout(self.path)

    @property
    def classes(self) -> tuple[str, ...]:
        """tuple of str : Class names in index order (``()`` for regression)."""
        return self.task.classes

    @property
    def n_folds(self) -> int:
        """int : Number of outer folds.

        Raises
        ------
        ConfigError
            For a run without a cohort (``brainmaps import-model``: a model trained
            elsewhere), which only ``predict`` and ``serve`` can use.
        """
        if self.folds.empty:
            raise ConfigError(
                f"run {self.path} has no cohort and no folds (a model imported with "
                "'brainmaps import-model', trained elsewhere): only 'brainmaps predict' and "
                "'brainmaps serve' apply to it; train a run on a cohort for the other steps."
            )
        return int(self.folds["fold"].max()) + 1

    @property
    def preprocess(self) -> PreprocessConfig:
        """PreprocessConfig : How the run's volumes were made."""
        return self.config.preprocess

    @property
    def grid(self) -> Grid:
        """Grid : The model grid (shape and world affine of every volume and map)."""
        return self.preprocess.grid

    @property
    def labels(self) -> np.ndarray:
        """numpy.ndarray : ``y`` (int64 class indices, or float32 for regression)."""
        return self.task.targets(self.table["y"].to_numpy())

    def indices(self, fold: int, role: str = "test") -> np.ndarray:
        """Row indices (into :attr:`table`) of the scans with ``role`` in ``fold``.

        Parameters
        ----------
        fold : int
            Outer fold, ``0 .. n_folds - 1``.
        role : {"test", "train", "val", "fit"}
            ``"fit"`` is train and val together (everything but the test fold).

        Returns
        -------
        numpy.ndarray of int64
        """
        if not 0 <= int(fold) < self.n_folds:
            raise ConfigError(f"fold must be in 0..{self.n_folds - 1}, got {fold!r}.")
        roles = self.folds.loc[self.folds["fold"] == int(fold), "role"].to_numpy()
        if len(roles) != len(self.table):
            raise ConfigError(
                f"{self.layout.folds} has {len(roles)} rows for fold {fold} but "
                f"{self.layout.cohort.name} has {len(self.table)} scans; the run folder is "
                "inconsistent, "
                "train it again in a new folder."
            )
        wanted = {"fit": ("train", "val")}.get(role, (role,))
        return np.flatnonzero(np.isin(roles, wanted))

    def checkpoints(self) -> list[Path]:
        """The fold checkpoint files that exist, in fold order."""
        return list(self.layout.existing_checkpoints().values())

    def fold_models(self) -> dict[int, Path]:
        """``{fold: fold-<k>/model.pt}`` for every fold; a clear error if any is missing.

        Raises
        ------
        ConfigError
            If a fold has no model yet (training was interrupted).
        """
        found = self.layout.existing_checkpoints()
        missing = [k for k in range(self.n_folds) if k not in found]
        if missing:
            raise ConfigError(
                f"run {self.path} has no model for fold(s) {missing}; finish 'brainmaps "
                "train' (it resumes) first."
            )
        return found

    def volumes(self, *, n_jobs: int = 1, progress: bool = False) -> CachedVolumes | StackedVolumes:
        """The preprocessed volumes of :attr:`table`, from the run's cache.

        Files missing from the cache (a new machine, a cleared cache) are preprocessed
        again with the run's settings. A run with several input channels
        (``data.path_col`` or ``data.suffix`` lists them) gets a
        :class:`~brainmaps.data.stacked.StackedVolumes` of ``(C, X, Y, Z)`` volumes.
        """
        cache_dir = self.config.execution.resolved_cache_dir()
        data = self.config.data
        return cache_channels(
            self.table,
            channel_names(data.path_col, data.suffix),
            self.preprocess,
            cache_dir,
            n_jobs=n_jobs,
            progress=progress,
        )


def _read_tsv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: {path.parent} is not a finished brainmaps run folder. Give "
            "the --out folder of 'brainmaps train' (run it first, or resume it)."
        )
    return pd.read_csv(
        path, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False
    )


def _task(config: RunConfig, table: pd.DataFrame) -> Task:
    """Classification iff ``y`` holds the integers 0..K-1 (or the config says so)."""
    name = config.data.task
    if table.empty and name != "auto":  # an imported model: no cohort (classes in model.pt)
        return get_task(name)
    y = pd.to_numeric(table["y"], errors="coerce").to_numpy(dtype=float)
    if name == "auto":
        codes = np.unique(y)
        is_codes = np.all(codes == np.arange(len(codes))) and len(codes) >= 2
        name = "classification" if is_codes else "regression"
    if not get_task(name).is_classification:
        return get_task(name)
    pairs = table[["y", "label"]].astype({"y": int, "label": str}).drop_duplicates()
    return get_task(name, pairs.sort_values("y")["label"].tolist())


def read_execution(layout: RunLayout, config: RunConfig) -> ExecutionConfig:
    """The execution settings of the run's last writer (``execution.yaml``)."""
    if not layout.execution.is_file():
        return config.execution
    try:
        raw = yaml.safe_load(layout.execution.read_text(encoding="utf-8")) or {}
        return ExecutionConfig(**{k: v for k, v in raw.items() if k != "progress"})
    except (yaml.YAMLError, TypeError, ConfigError):
        return config.execution


def write_execution(layout: RunLayout, execution: ExecutionConfig) -> None:
    """Record the execution settings of this writer (atomic)."""
    from brainmaps.utils import atomic_write_text

    text = yaml.safe_dump(execution.to_dict(), sort_keys=False, default_flow_style=False)
    atomic_write_text(layout.execution, text)


def open_run(run_dir: str | os.PathLike | RunFolder) -> RunFolder:
    """Read a run folder (``config.yaml``, ``cohort.tsv``, ``folds.tsv``).

    Parameters
    ----------
    run_dir : str or os.PathLike or RunFolder
        The ``--out`` folder of ``brainmaps train``; a :class:`RunFolder` is returned as
        it is, so functions can accept either.

    Returns
    -------
    RunFolder

    Raises
    ------
    ConfigError
        If a file is missing or unreadable.
    """
    if isinstance(run_dir, RunFolder):
        return run_dir
    layout = RunLayout(run_dir)
    if not layout.config.is_file():
        raise ConfigError(
            f"{layout.root} is not a brainmaps run folder (no {layout.CONFIG}); give the "
            "--out folder of 'brainmaps train'."
        )
    try:
        raw = yaml.safe_load(layout.config.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{layout.config} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "preprocess" not in raw:
        raise ConfigError(f"{layout.config} has no 'preprocess' section; re-run training.")
    config = RunConfig.from_dict(raw, origin=str(layout.config), saved=True)
    config = replace(config, execution=read_execution(layout, config))
    table = _read_tsv(layout.cohort)
    folds = _read_tsv(layout.folds)
    return RunFolder(layout.root, config, table, folds, _task(config, table))
