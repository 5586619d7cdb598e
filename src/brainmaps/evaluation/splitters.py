"""Cross-validation splits grouped by subject and stratified by label.

Kan et al. split images, not subjects, so scans of one person could land in training
and test data. Here every split is grouped by subject: all rows (sessions) of a subject
always share a fold, and user-supplied splits are checked for that
(:func:`check_no_leakage`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedShuffleSplit

from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError, DataLeakageError
from brainmaps.tasks import TASK_NAMES, get_task

__all__ = [
    "check_class_counts",
    "check_no_leakage",
    "folds_table",
    "inner_split",
    "make_folds",
    "read_folds",
]

_TASKS = ("auto", *TASK_NAMES)
_MAX_BINS = 10


def _as_1d(name: str, values, n: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise CohortError(f"{name} must be one-dimensional (one value per row), got {arr.shape}.")
    if n is not None and len(arr) != n:
        raise CohortError(
            f"{name} has {len(arr)} rows but subjects has {n}; give one value per row."
        )
    return arr


def _is_regression(labels: np.ndarray, task) -> bool:
    if str(task) not in _TASKS:
        raise ConfigError(f"task must be one of {_TASKS}, got {task!r}.")
    if str(task) != "auto":
        return not get_task(str(task)).is_classification
    if labels.dtype.kind != "f":
        return False
    finite = labels[np.isfinite(labels)]
    return bool(np.any(finite != np.round(finite)) or len(np.unique(finite)) > 20)


def _quantile_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin continuous values into ``n_bins`` (or fewer, on ties) quantile bins."""
    if n_bins < 2:
        return np.zeros(len(values), dtype=int)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def _subject_strata(subjects, labels, task: str, n_bins_of):
    """Return (unique subjects, row -> subject index, stratum of each subject).

    A subject's stratum is its most frequent label (classification) or the quantile bin
    of its mean label (regression), with ``n_bins_of(n_subjects)`` bins.
    """
    subjects = _as_1d("subjects", subjects).astype(str)
    labels = _as_1d("labels", labels, len(subjects))
    if len(subjects) == 0:
        raise CohortError("subjects is empty; the cohort has no rows to split.")
    uniq, inverse = np.unique(subjects, return_inverse=True)
    if _is_regression(labels, task):
        values = labels.astype(float)
        if not np.all(np.isfinite(values)):
            raise CohortError("labels hold NaN or infinite values; drop or fill those rows first.")
        means = np.bincount(inverse, weights=values) / np.bincount(inverse)
        return uniq, inverse, _quantile_bins(means, min(_MAX_BINS, n_bins_of(len(uniq))))
    codes = np.unique(labels.astype(str), return_inverse=True)[1]
    table = np.zeros((len(uniq), codes.max() + 1), dtype=int)
    np.add.at(table, (inverse, codes), 1)
    return uniq, inverse, table.argmax(axis=1)


def _check_n_folds(n_folds, n_subjects: int) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}; set --folds.")
    if n_subjects < n_folds:
        fix = f"use --folds {n_subjects} or fewer, or add" if n_subjects >= 2 else "add"
        raise CohortError(
            f"cannot make {n_folds} folds from {n_subjects} subjects; {fix} subjects."
        )


def make_folds(
    subjects,
    labels,
    n_folds: int = 10,
    seed: int = 42,
    *,
    stratify: bool = True,
    task: str = "auto",
) -> np.ndarray:
    """Assign each row to a test fold, grouped by subject and stratified by label.

    Uses :class:`sklearn.model_selection.StratifiedGroupKFold` with shuffling: all rows
    of a subject (e.g. several sessions) fall into one fold, and class proportions are
    kept in every fold. Continuous labels are stratified on quantile bins.

    Parameters
    ----------
    subjects : array-like of shape (n_rows,)
        Subject identifier of each row.
    labels : array-like of shape (n_rows,)
        Class labels, or continuous values for regression.
    n_folds : int
        Number of folds (>= 2, at most the number of subjects).
    seed : int
        Seeds the shuffling: same inputs and seed, same folds.
    stratify : bool
        Set False for plain grouped folds (shuffled subjects dealt into folds).
    task : {"auto", "classification", "regression"}
        How to read ``labels``; ``"auto"`` treats floats with non-integer values (or
        more than 20 distinct values) as continuous.

    Returns
    -------
    numpy.ndarray of int, shape (n_rows,)
        Fold index (0 .. n_folds - 1) of each row.

    Raises
    ------
    CohortError
        If there are fewer subjects than folds, or lengths differ.
    ConfigError
        If ``n_folds`` is not an integer >= 2.
    """
    _check_n_folds(n_folds, len(np.unique(_as_1d("subjects", subjects).astype(str))))
    # regression bins hold at least n_folds subjects, so each fold can get one of each
    uniq, inverse, strata = _subject_strata(subjects, labels, task, lambda n: n // int(n_folds))
    if not stratify:
        strata = np.zeros(len(uniq), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
    subject_fold = np.empty(len(uniq), dtype=int)
    with warnings.catch_warnings():  # small classes are reported by check_class_counts
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        groups = np.arange(len(uniq))
        for k, (_, test) in enumerate(splitter.split(groups, strata, groups)):
            subject_fold[test] = k
    return subject_fold[inverse]


def check_class_counts(labels, n_folds: int, *, classes=None, subjects=None) -> None:
    """Fail early when a class has fewer subjects than folds.

    Parameters
    ----------
    labels : array-like
        One label per subject, or one per row together with ``subjects``.
    n_folds : int
        The planned number of folds.
    classes : sequence of str, optional
        Class names, when ``labels`` are integer codes into it (used in the message).
    subjects : array-like, optional
        Subject of each row; subjects are then counted once per class.

    Raises
    ------
    CohortError
        Naming every class that is too small, its subject count, and a ``--folds`` value
        that would work.
    """
    labels = _as_1d("labels", labels)
    if subjects is not None:
        subjects = _as_1d("subjects", subjects, len(labels)).astype(str)
        pairs = pd.DataFrame({"s": subjects, "y": labels}).drop_duplicates()
        labels = pairs["y"].to_numpy()
    values, counts = np.unique(labels, return_counts=True)
    small = [(v, c) for v, c in zip(values, counts, strict=True) if c < n_folds]
    if not small:
        return
    names = ", ".join(f"{_class_name(v, classes)!r} ({c} subjects)" for v, c in small)
    fewest = int(counts.min())
    fix = f"use --folds {fewest} or fewer" if fewest >= 2 else "drop that class from the cohort"
    raise CohortError(
        f"class(es) {names} have fewer subjects than the {n_folds} folds, so some test folds "
        f"would miss them; {fix}, or add subjects."
    )


def _class_name(value, classes) -> object:
    if classes is not None and isinstance(value, int | np.integer) and 0 <= value < len(classes):
        return classes[int(value)]
    return value.item() if isinstance(value, np.generic) else value


def check_no_leakage(subjects, folds) -> None:
    """Check that no subject appears in two folds (e.g. in a user-supplied split).

    Parameters
    ----------
    subjects : array-like of shape (n_rows,)
    folds : array-like of shape (n_rows,)
        Fold of each row.

    Raises
    ------
    DataLeakageError
        Naming the subjects found in more than one fold, with their folds.
    """
    subjects = _as_1d("subjects", subjects).astype(str)
    folds = _as_1d("folds", folds, len(subjects))
    per_subject = pd.DataFrame({"s": subjects, "f": folds}).groupby("s")["f"].unique()
    leaking = per_subject[per_subject.map(len) > 1]
    if leaking.empty:
        return
    shown = "; ".join(f"{s} in folds {sorted(v.tolist())}" for s, v in list(leaking.items())[:10])
    more = f" and {len(leaking) - 10} more" if len(leaking) > 10 else ""
    raise DataLeakageError(
        f"{len(leaking)} subject(s) appear in more than one fold ({shown}{more}); their scans "
        "would be both trained on and tested. Give every row of a subject the same fold."
    )


def inner_split(
    subjects, labels, val_fraction: float = 0.1, seed: int = 42, *, task: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a validation part of a training fold, grouped and stratified.

    Subjects (not rows) are drawn with
    :class:`sklearn.model_selection.StratifiedShuffleSplit`; at least one subject per
    class is held out when the cohort allows it. It falls back to an unstratified draw,
    with a warning, when a class is too small to be split.

    Parameters
    ----------
    subjects, labels : array-like of shape (n_rows,)
    val_fraction : float
        Fraction of subjects held out, in [0, 1). 0 returns an empty validation set.
    seed : int
        Seeds the draw.
    task : {"auto", "classification", "regression"}
        How to read ``labels`` (see :func:`make_folds`).

    Returns
    -------
    train_idx, val_idx : numpy.ndarray of int
        Sorted row positions into ``subjects``.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}.")
    n_subjects = len(np.unique(_as_1d("subjects", subjects).astype(str)))
    n_val = min(max(1, round(val_fraction * n_subjects)), n_subjects - 1)
    # regression: at most n_val bins of >= 2 subjects, so every bin can give one
    uniq, inverse, strata = _subject_strata(subjects, labels, task, lambda n: min(n_val, n // 2))
    rows = np.arange(len(inverse))
    if val_fraction == 0:
        return rows, rows[:0]
    if len(uniq) < 2:
        raise CohortError(
            f"cannot hold out a validation set from {len(uniq)} subject; set val_fraction to 0."
        )
    n_strata = len(np.unique(strata))
    if n_val < n_strata <= len(uniq) - n_strata:
        n_val = n_strata  # at least one validation subject per class
    try:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        _, val_subjects = next(splitter.split(uniq, strata))
    except ValueError as exc:
        warnings.warn(
            f"validation split not stratified ({exc}); drawing {n_val} subjects at random.",
            BrainmapsWarning,
            stacklevel=2,
        )
        val_subjects = np.random.default_rng(seed).permutation(len(uniq))[:n_val]
    is_val = np.isin(inverse, val_subjects)
    return rows[~is_val], rows[is_val]


def folds_table(subjects, folds, sessions=None) -> pd.DataFrame:
    """Return a ``subject``/``fold`` table (one row per subject), as read by :func:`read_folds`.

    Raises
    ------
    DataLeakageError
        If a subject has rows in two folds.
    """
    subjects = _as_1d("subjects", subjects).astype(str)
    folds = _as_1d("folds", folds, len(subjects))
    check_no_leakage(subjects, folds)
    table = pd.DataFrame({"subject": subjects, "fold": folds})
    if sessions is not None:
        return table.assign(session=_as_1d("sessions", sessions, len(subjects)))
    return table.drop_duplicates("subject").reset_index(drop=True)


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a user-supplied split: a TSV/CSV with ``subject`` and ``fold`` columns.

    A run folder (or its ``cohort.tsv``, whose ``test_fold`` column is the fold) gives that
    run's outer folds, so a second run (e.g. a transfer target) can be tested on exactly
    the same subjects per fold.

    Returns
    -------
    pandas.DataFrame
        Columns ``subject`` (str) and ``fold`` (int, relabelled 0 .. k-1 in sorted order).

    Raises
    ------
    ConfigError
        If the file is missing or lacks the columns.
    DataLeakageError
        If a subject is listed in two folds.
    """
    path = Path(path)
    if path.is_dir() and (path / "cohort.tsv").is_file():
        path = path / "cohort.tsv"
    if not path.is_file():
        raise ConfigError(
            f"folds file {path} does not exist; give a TSV with subject and fold columns, or "
            "a run folder, with --folds-file."
        )
    table = pd.read_csv(path, sep=None, engine="python", dtype={"subject": str})
    if "fold" not in table and "test_fold" in table:  # a run's cohort.tsv
        table = table.rename(columns={"test_fold": "fold"})
    missing = {"subject", "fold"} - set(table.columns)
    if missing:
        raise ConfigError(
            f"folds file {path} lacks column(s) {sorted(missing)}; it needs 'subject' and "
            f"'fold' (found {list(table.columns)})."
        )
    check_no_leakage(table["subject"].to_numpy(), table["fold"].to_numpy())
    codes = np.unique(table["fold"].to_numpy(), return_inverse=True)[1]
    return pd.DataFrame({"subject": table["subject"].astype(str), "fold": codes.astype(int)})
