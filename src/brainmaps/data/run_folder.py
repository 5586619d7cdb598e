"""Read a run folder written by ``brainmaps train``: table, folds, task and volumes.

Every later stage (attribution, baselines, analysis, reports) starts from a run folder;
this module reads it without importing torch, so any stage can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from brainmaps.data.cache import CachedVolumes, cache_volumes, resolve_cache_dir
from brainmaps.data.preprocess import Grid, PreprocessConfig
from brainmaps.exceptions import ConfigError

__all__ = ["RunFolder", "open_run"]


@dataclass(frozen=True)
class RunFolder:
    """The contents of a run folder, read once.

    Attributes
    ----------
    path : pathlib.Path
        The run folder.
    config : dict
        ``config.yaml`` as plain mappings (``data``, ``preprocess``, ``model``,
        ``training``, ``out``).
    table : pandas.DataFrame
        ``cohort.tsv``: one row per scan (``subject``, ``session``, ``path``, ``label``,
        ``y``, ``site``, ..., ``cache_slot``, ``test_fold``). Row ``i`` is volume ``i`` of
        :meth:`volumes`.
    folds : pandas.DataFrame
        ``folds.tsv`` in long format: ``fold``, ``subject``, ``session``, ``role``
        (``train`` / ``val`` / ``test``), one block of rows per fold in table order.
    task : {"classification", "regression"}
    classes : tuple of str
        Class names in index order (``()`` for regression).
    """

    path: Path
    config: dict
    table: pd.DataFrame
    folds: pd.DataFrame
    task: str
    classes: tuple[str, ...]

    @property
    def n_folds(self) -> int:
        """int : Number of outer folds."""
        return int(self.folds["fold"].max()) + 1

    @property
    def preprocess(self) -> PreprocessConfig:
        """PreprocessConfig : How the run's volumes were made."""
        return PreprocessConfig.from_dict(self.config["preprocess"])

    @property
    def grid(self) -> Grid:
        """Grid : The model grid (shape and world affine of every volume and map)."""
        return self.preprocess.grid

    @property
    def labels(self) -> np.ndarray:
        """numpy.ndarray : ``y`` (int64 class indices, or float32 for regression)."""
        y = self.table["y"].to_numpy()
        return y.astype(np.int64) if self.task == "classification" else y.astype(np.float32)

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
                f"{self.path / 'folds.tsv'} has {len(roles)} rows for fold {fold} but "
                f"cohort.tsv has {len(self.table)} scans; the run folder is inconsistent, "
                "train it again in a new folder."
            )
        wanted = {"fit": ("train", "val")}.get(role, (role,))
        return np.flatnonzero(np.isin(roles, wanted))

    def checkpoints(self) -> list[Path]:
        """The ``fold-<k>/model.pt`` files that exist, in fold order."""
        found = sorted(self.path.glob("fold-*/model.pt"), key=lambda p: int(p.parent.name[5:]))
        return [p for p in found if p.parent.name[5:].isdigit()]

    def fold_models(self) -> dict[int, Path]:
        """``{fold: fold-<k>/model.pt}`` for every fold; a clear error if any is missing.

        Raises
        ------
        ConfigError
            If a fold has no model yet (training was interrupted).
        """
        found = {int(p.parent.name[5:]): p for p in self.checkpoints()}
        missing = [k for k in range(self.n_folds) if k not in found]
        if missing:
            raise ConfigError(
                f"run {self.path} has no model for fold(s) {missing}; finish 'brainmaps "
                "train' (it resumes) first."
            )
        return found

    def volumes(self, *, n_jobs: int = 1, progress: bool = False) -> CachedVolumes:
        """The preprocessed volumes of :attr:`table`, from the run's cache.

        Files missing from the cache (a new machine, a cleared cache) are preprocessed
        again with the run's settings.
        """
        cache_dir = resolve_cache_dir(self.config.get("training", {}).get("cache_dir"))
        return cache_volumes(
            self.table["path"].tolist(),
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


def _task_and_classes(config: dict, table: pd.DataFrame) -> tuple[str, tuple[str, ...]]:
    """Classification iff ``y`` holds the integers 0..K-1 (or the config says so)."""
    task = str(config.get("data", {}).get("task", "auto"))
    y = pd.to_numeric(table["y"], errors="coerce").to_numpy(dtype=float)
    if task == "auto":
        codes = np.unique(y)
        is_codes = np.all(codes == np.arange(len(codes))) and len(codes) >= 2
        task = "classification" if is_codes else "regression"
    if task == "regression":
        return task, ()
    pairs = table[["y", "label"]].astype({"y": int, "label": str}).drop_duplicates()
    return task, tuple(pairs.sort_values("y")["label"].tolist())


def open_run(run_dir: str | os.PathLike) -> RunFolder:
    """Read a run folder (``config.yaml``, ``cohort.tsv``, ``folds.tsv``).

    Parameters
    ----------
    run_dir : str or os.PathLike
        The ``--out`` folder of ``brainmaps train``.

    Returns
    -------
    RunFolder

    Raises
    ------
    ConfigError
        If a file is missing or unreadable.
    """
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ConfigError(
            f"{path} is not a brainmaps run folder (no config.yaml); give the --out folder of "
            "'brainmaps train'."
        )
    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path / 'config.yaml'} is not valid YAML: {exc}") from None
    if not isinstance(config, dict) or "preprocess" not in config:
        raise ConfigError(f"{path / 'config.yaml'} has no 'preprocess' section; re-run training.")
    table = _read_tsv(path / "cohort.tsv")
    folds = _read_tsv(path / "folds.tsv")
    task, classes = _task_and_classes(config, table)
    return RunFolder(path, config, table, folds, task, classes)
