"""Group-mean maps of a run's subject maps (private to :mod:`.cohort`).

Classification: one mean per true class and their sum (Kan et al.); regression: the
mean of all subjects, of the young and the old and of the subjects with a positive or
negative prediction gap (Hofmann et al. 2022, see
:meth:`brainmaps.tasks.Regression.map_groups`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmaps.data.io import save_img
from brainmaps.run.folder import RunFolder
from brainmaps.tasks import DEFAULT_AGE_GROUPS, check_age_groups

__all__ = ["class_means", "regression_gap", "save_means"]


def regression_gap(run: RunFolder, manifest: pd.DataFrame) -> np.ndarray | None:
    """Prediction gap of each row of ``manifest`` from the run's out-of-fold predictions.

    The ``gap_corrected`` column of ``predictions.tsv`` (the gap after age-bias
    correction) where it has a value, else ``prediction - y``; NaN for a subject without
    a prediction. ``None`` for a classification run or a run without ``predictions.tsv``.
    """
    path = run.layout.predictions
    if run.task.is_classification or not path.is_file():
        return None
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})
    table["session"] = table["session"].fillna("")
    gap = pd.to_numeric(table["prediction"], errors="coerce") - pd.to_numeric(
        table["y"], errors="coerce"
    )
    if "gap_corrected" in table:
        corrected = pd.to_numeric(table["gap_corrected"], errors="coerce")
        gap = corrected.where(corrected.notna(), gap)
    by_scan = dict(zip(zip(table["subject"], table["session"], strict=True), gap, strict=True))
    subjects = manifest["subject"].astype(str)
    keys = zip(subjects, manifest["session"].fillna("").astype(str), strict=True)
    return np.array([by_scan.get(k, np.nan) for k in keys], dtype=float)


def class_means(
    run: RunFolder,
    folder: Path,
    manifest: pd.DataFrame,
    age_groups: Sequence[float] | str | None = DEFAULT_AGE_GROUPS,
) -> dict[str, np.ndarray]:
    """Group-mean maps of the maps listed in ``manifest`` (files in ``folder``).

    Parameters
    ----------
    run : RunFolder
    folder : pathlib.Path
    manifest : pandas.DataFrame
        ``maps.tsv`` rows (``file``, ``label``, ``subject``, ``session``).
    age_groups : (float, float), str or None
        Regression only: the cutoffs of the young and old groups (see
        :func:`explain_run`).

    Returns
    -------
    dict of str to numpy.ndarray
        The groups of :meth:`Task.map_groups <brainmaps.tasks.Task.map_groups>` that have
        maps (each true class; for regression ``all``, ``young``, ``old``,
        ``gap_positive``, ``gap_negative``), then the task's combined map (``conjoined``,
        the sum of the class means) when every class has maps.
    """
    files = manifest["file"].to_numpy()
    groups = run.task.map_groups(
        run.task.label_targets(manifest["label"]),
        gap=regression_gap(run, manifest),
        age_groups=check_age_groups(age_groups),
    )
    means = {}
    for name, rows in groups.items():
        total = sum(np.asarray(nib.load(folder / f).dataobj, dtype=np.float64) for f in files[rows])
        means[name] = (total / int(rows.sum())).astype(np.float32)
    combined = run.task.combined_map()
    if combined is not None and len(means) == len(run.classes):
        means[combined] = sum(means.values()).astype(np.float32)
    return means


def save_means(run: RunFolder, means: dict[str, np.ndarray], path: Callable[[str], Path]) -> None:
    """Write the group means; for regression remove the group maps not made this time
    (groups of other ``age_groups``, or a gap group that became empty)."""
    for group, data in means.items():
        save_img(run.grid.to_img(data), path(group))
    if not run.task.is_classification:
        for group in set(run.task.map_names()) - set(means):
            path(group).unlink(missing_ok=True)
