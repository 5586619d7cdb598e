"""Cohorts: which scans, of which subjects, with which labels.

A cohort comes from a table (TSV/CSV with a subject column, an image path column and
the target column) or from a BIDS folder (``participants.tsv`` plus
``sub-*/[ses-*/]<datatype>/*_<suffix>.nii[.gz]``). Either way it becomes a
:class:`Cohort`: one row per scan with the columns ``subject, session, path, label, y,
site`` followed by the other columns of the source. Several images per subject
(channels: ``path_col="path_gm,path_wm"`` or ``suffix="GMD,GMV"``) add ``path_<name>``
columns after ``path`` (see :mod:`brainmaps.data.channels`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.data import channels as ch
from brainmaps.data.io import load_img
from brainmaps.data.labels import (
    MAX_AUTO_CLASSES,
    _clean,
    _encode_classes,
    _examples,
    _missing_labels,
    _resolve_task,
)
from brainmaps.data.tables import TABLE_SUFFIXES, read_table
from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError
from brainmaps.utils import atomic_path

__all__ = ["MAX_AUTO_CLASSES", "TASKS", "Cohort", "load_cohort"]

#: Accepted values of ``task``.
TASKS = ("auto", "classification", "regression")

_SUBJECT_COLS = ("participant_id", "subject", "subject_id", "sub", "id")
_PATH_COLS = ("path", "image", "file", "filename", "t1", "nifti")
_SESSION_COLS = ("session", "ses", "session_id")
_SITE_COLS = ("site",)
_FIRST = ("subject", "session", "path", "label", "y", "site")
_INTERNAL = ("_subject", "_session", "_path", "_line", "_site")


@dataclass(frozen=True, eq=False)
class Cohort:
    """Scans with labels, one row per scan.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``subject`` (str), ``session`` (str, ``''`` when none), ``path``
        (absolute str), ``label`` (the raw label), ``y`` (class index for
        classification, float for regression), ``site`` (str, ``''`` when none), then
        every other column of the source.
    target : str
        Name of the label column in the source.
    task : {"classification", "regression"}
    classes : tuple of str
        Class names in index order (``()`` for regression).
    source : str
        The table or BIDS folder it was read from.
    channels : tuple of str
        The name of each image of a scan (BIDS suffix, or path column without a leading
        ``path_``); several channels add a ``path_<name>`` column per channel after the
        first, whose images are in ``path``. ``()`` or one name: one image per scan.
    """

    table: pd.DataFrame
    target: str
    task: str
    classes: tuple[str, ...] = ()
    source: str = ""
    channels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.table)

    @property
    def subjects(self) -> np.ndarray:
        """numpy.ndarray of str : The subject of each scan."""
        return self.table["subject"].to_numpy(dtype=str)

    @property
    def labels(self) -> np.ndarray:
        """numpy.ndarray : ``y`` of each scan (int64 classes or float32 values)."""
        dtype = np.int64 if self.task == "classification" else np.float32
        return self.table["y"].to_numpy(dtype=dtype)

    def channel_paths(self) -> list[list[str]]:
        """The image paths of each channel (in :attr:`channels` order), in table order."""
        return [self.table[c].tolist() for c in ch.channel_columns(self.channels)]

    def class_mapping(self) -> dict[str, int]:
        """Return ``{class name: class index}`` (empty for regression)."""
        return {name: i for i, name in enumerate(self.classes)}

    def to_tsv(self, path: str | os.PathLike) -> None:
        """Write the table as TSV, atomically."""
        with atomic_path(path) as tmp:
            self.table.to_csv(tmp, sep="\t", index=False)

    def summary(self) -> str:
        """One line, e.g. ``"120 scans, 120 subjects, target 'group': control=60, patient=60"``."""
        n_subjects = self.table["subject"].nunique()
        head = f"{len(self)} scans, {n_subjects} subjects, target {self.target!r}"
        y = self.labels
        if self.task == "regression":
            return (
                f"{head} (regression): mean {y.mean():.4g}, sd {y.std():.4g}, "
                f"range {y.min():.4g} to {y.max():.4g}"
            )
        counts = np.bincount(y, minlength=len(self.classes))
        parts = [f"{c}={n}" for c, n in zip(self.classes, counts, strict=True)]
        return f"{head}: " + ", ".join(parts)


def _read_table(path: Path) -> pd.DataFrame:
    frame = read_table(path, what="cohort table", error=CohortError)
    frame["_line"] = np.arange(len(frame)) + 2  # line in the file (header is line 1)
    return frame


def _columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _INTERNAL and not str(c).startswith("_path_")]


def _pick_column(frame, given, candidates, what, param, source, required=True) -> str | None:
    """Return the column named ``given`` or the first of ``candidates`` (any case)."""
    columns = _columns(frame)
    if given is not None:
        if given in columns:
            return given
        raise CohortError(
            f"{param}={given!r}: no such column in {source}; available columns: "
            f"{', '.join(columns)}. Pass one of them."
        )
    lower = {c.lower(): c for c in reversed(columns)}
    for name in candidates:
        if name in lower:
            return lower[name]
    if not required:
        return None
    raise CohortError(
        f"{source} has no {what} column: expected one of {', '.join(candidates)}, found "
        f"{', '.join(columns)}. Name it with {param}=... (CLI --{param.replace('_', '-')})."
    )


def _add_session(frame: pd.DataFrame, source: Path) -> str | None:
    """Fill ``_session`` from a session column ('' when none); return that column."""
    session_col = _pick_column(frame, None, _SESSION_COLS, "session", "", source, False)
    if session_col is not None:
        frame["_session"] = _clean(frame[session_col]).str.removeprefix("ses-")
    else:
        frame["_session"] = ""
    return session_col


def _add_site(frame: pd.DataFrame, source: Path) -> str | None:
    """Fill ``_site`` from a site column ('' when none); return that column."""
    site_col = _pick_column(frame, None, _SITE_COLS, "site", "", source, False)
    frame["_site"] = _clean(frame[site_col]) if site_col is not None else ""
    return site_col


def _require_values(frame: pd.DataFrame, column: str, what: str, source: Path) -> None:
    empty = frame.loc[frame[column] == "", "_line"]
    if len(empty):
        raise CohortError(
            f"{source}: {len(empty)} row(s) have no {what} (lines {_examples(empty)}); fill "
            "them in or remove those rows."
        )


def _from_table(source: Path, subject_col, path_col, drop_missing=False, notes=None):
    frame = _read_table(source)
    subject_col = _pick_column(frame, subject_col, _SUBJECT_COLS, "subject", "subject_col", source)
    if len(ch.split_list(path_col)) > 1:
        channels = ch.channel_names(path_col, None)
        columns = [
            _pick_column(frame, c, (), "", "path_col", source) for c in ch.split_list(path_col)
        ]
    else:
        try:
            columns = [_pick_column(frame, path_col, _PATH_COLS, "image path", "path_col", source)]
        except CohortError as exc:
            hint = (
                " For a BIDS dataset, pass its folder instead."
                if source.name.startswith("participants")
                else ""
            )
            raise CohortError(f"{exc}{hint}") from None
        channels = (ch.column_channel(columns[0]),)
    frame["_subject"] = _clean(frame[subject_col])
    for column, internal in zip(columns, ch._internal(channels), strict=True):
        frame[internal] = _clean(frame[column])
    _require_values(frame, "_subject", f"subject (column {subject_col!r})", source)
    if len(channels) == 1:
        _require_values(frame, "_path", f"image path (column {columns[0]!r})", source)
    session_col = _add_session(frame, source)
    site_col = _add_site(frame, source)
    if len(channels) > 1:
        fix = "fill in its path columns"
        frame = ch.drop_incomplete(frame, channels, source, drop_missing, notes, fix)
    for column, internal in zip(columns, ch._internal(channels), strict=True):
        ch.check_paths(frame, internal, column, source)
    frame.attrs["channels"] = channels
    return frame, {subject_col, *columns, session_col, site_col}


def _match_images(frame, images, participants, suffix, drop_missing, notes) -> pd.DataFrame:
    """Join participants and images; mismatches raise (or are dropped with a note)."""
    merged = frame.merge(images, on="_subject", how="outer", indicator=True)
    problems = {
        "left_only": f"participant(s) of {participants} without any *_{suffix} image",
        "right_only": f"subject(s) with *_{suffix} images but no row in {participants}",
    }
    for side, what in problems.items():
        subjects = merged.loc[merged["_merge"] == side, "_subject"].unique()
        if len(subjects) == 0:
            continue
        message = f"{len(subjects)} {what}: {_examples(subjects)}"
        if not drop_missing:
            raise CohortError(
                f"{message}. Fix the dataset or pass drop_missing=True (CLI --drop-missing) "
                "to drop them."
            )
        notes.append(f"dropped {message}.")
    merged = merged.loc[merged["_merge"] == "both"].drop(columns="_merge")
    if merged.empty:
        raise CohortError(f"no *_{suffix} image matches a participant of {participants}.")
    merged["_line"] = merged["_line"].astype(int)
    return merged.reset_index(drop=True)


def _from_bids(source, suffix, subject_col, notes, drop_missing):
    participants = source / "participants.tsv"
    if not participants.is_file():
        raise CohortError(
            f"BIDS folder {source} has no participants.tsv; add one with participant_id and "
            "the target column, or give a table with subject, path and target columns."
        )
    frame = _read_table(participants)
    subject_col = _pick_column(
        frame, subject_col, _SUBJECT_COLS, "subject", "subject_col", participants
    )
    frame["_subject"] = _clean(frame[subject_col]).str.removeprefix("sub-")
    _require_values(frame, "_subject", f"participant id (column {subject_col!r})", participants)
    _check_duplicates(frame, participants, "participant")
    images, channels = ch.bids_images(source, suffix, drop_missing, notes)
    suffix = "{" + ",".join(channels) + "}" if len(channels) > 1 else suffix
    merged = _match_images(frame, images, participants, suffix, drop_missing, notes)
    site_col = _add_site(merged, participants)
    merged.attrs["channels"] = channels
    return merged, {subject_col, site_col}


def _check_duplicates(frame: pd.DataFrame, source, what: str = "subject/session") -> None:
    keys = ["_subject", "_session"] if "_session" in frame else ["_subject"]
    dup = frame.duplicated(keys, keep=False)
    if dup.any():
        pairs = frame.loc[dup, keys].drop_duplicates().astype(str).agg("/".join, axis=1)
        raise CohortError(
            f"{source}: {what} rows must be unique, found duplicates for "
            f"{_examples(pairs.str.rstrip('/'))} (lines {_examples(frame.loc[dup, '_line'])}). "
            "Remove the duplicates or add a session column."
        )


def _check_target(frame: pd.DataFrame, target: str, source) -> None:
    columns = _columns(frame)
    if target in columns:
        return
    close = [c for c in columns if c.lower() == str(target).lower()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise CohortError(
        f"target column {target!r} not found in {source}; available columns: "
        f"{', '.join(columns)}.{hint}"
    )


def _maybe_numeric(series: pd.Series) -> pd.Series:
    """Convert a column of number strings to numbers; leave other columns as text."""
    try:
        return pd.to_numeric(series)
    except (ValueError, TypeError):
        return series


def _assemble(frame, consumed, target, label, y, channels) -> pd.DataFrame:
    extra = dict(zip(ch.channel_columns(channels)[1:], ch._internal(channels)[1:], strict=True))
    table = pd.DataFrame(
        {
            "subject": frame["_subject"].astype(str),
            "session": frame["_session"].astype(str),
            "path": frame["_path"].astype(str),
            **{name: frame[internal].astype(str) for name, internal in extra.items()},
            "label": label,
            "y": y,
            "site": frame["_site"].astype(str),
        }
    )
    for column in _columns(frame):
        if column not in consumed and column != target:
            name = f"{column}_orig" if column in _FIRST or column in extra else column
            table[name] = _maybe_numeric(frame[column]).to_numpy()
    return table.reset_index(drop=True)


def load_cohort(
    source: str | os.PathLike,
    target: str,
    *,
    subject_col: str | None = None,
    path_col: str | None = None,
    suffix: str = "T1w",
    task: str = "auto",
    drop_missing: bool = False,
    classes: tuple[str, ...] | list[str] | None = None,
    check_images: bool = False,
) -> Cohort:
    """Read a cohort from a table or a BIDS folder.

    Parameters
    ----------
    source : str or os.PathLike
        A ``.tsv``, ``.csv`` or ``.txt`` table (image paths relative to its folder), or
        a BIDS folder with ``participants.tsv`` and
        ``sub-*/[ses-*/]<datatype>/*_<suffix>.nii[.gz]`` images (BIDS subjects are
        named by their label, without ``sub-``).
    target : str
        The label column.
    subject_col, path_col : str, optional
        Column names in a table; ``None`` picks the first present (any case) of
        participant_id, subject, subject_id, sub, id and of path, image, file,
        filename, t1, nifti. Optional ``session``/``ses`` and ``site`` columns are used.
        Several image columns, comma-separated (``"path_gm,path_wm"``), make one channel
        each (:mod:`brainmaps.data.channels`); every row needs an image in each.
    suffix : str
        BIDS image suffix (``"T1w"``, ``"FA"``, ...); any datatype folder is searched.
        Several, comma-separated (``"T1w,FLAIR"``), make one channel each; every
        subject/session needs one image of each.
    task : {"auto", "classification", "regression"}
        ``"auto"``: non-numeric labels are classes; numeric labels are classes when
        they are all integers with at most :data:`MAX_AUTO_CLASSES` distinct values,
        otherwise regression. Classes are sorted (numerically for numbers).
    drop_missing : bool
        Drop scans with a missing label (and, for BIDS, participants without an image
        or images without a participant; with several channels, scans that lack the
        image of a channel) with a :class:`BrainmapsWarning` instead of raising.
    classes : sequence of str, optional
        Class names in index order (implies classification).
    check_images : bool
        Also load and validate every image now (otherwise done when preprocessing).

    Returns
    -------
    Cohort

    Raises
    ------
    CohortError
        Unknown source, columns, duplicates, missing labels, fewer than two classes,
        mismatched BIDS subjects or a scan without the image of a channel. The message
        lists what was found.
    ImageError
        A listed image file does not exist (or is invalid, with ``check_images``).
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
    if classes is not None and task == "regression":
        raise ConfigError("classes=... cannot be combined with task='regression'.")
    source = Path(os.path.abspath(os.path.expanduser(source)))
    notes: list[str] = []
    if source.is_dir():
        ch.check_channel_source(True, path_col, suffix)
        frame, consumed = _from_bids(source, suffix, subject_col, notes, drop_missing)
    elif source.is_file() and source.suffix.lower() in TABLE_SUFFIXES:
        ch.check_channel_source(False, path_col, suffix)
        frame, consumed = _from_table(source, subject_col, path_col, drop_missing, notes)
    else:
        state = "is not a .tsv/.csv/.txt table" if source.exists() else "does not exist"
        raise CohortError(
            f"cohort source {source} {state}; give a table of subjects, image paths and "
            "labels, or a BIDS folder containing participants.tsv."
        )
    channels = frame.attrs["channels"]
    _check_target(frame, target, source)
    _check_duplicates(frame, source)
    frame = _missing_labels(frame, target, source, drop_missing, notes)
    raw = _clean(frame[target])
    task = _resolve_task(raw, task, classes, target, source)
    if task == "classification":
        label, y, names = _encode_classes(raw, classes, target, source)
    else:
        label = y = pd.to_numeric(raw).astype(np.float64)
        names = ()
    cohort = Cohort(
        _assemble(frame, consumed - {None}, target, label, y, channels),
        target,
        task,
        tuple(names),
        str(source),
        tuple(channels),
    )
    for note in notes:
        warnings.warn(note, BrainmapsWarning, stacklevel=2)
    if check_images:
        for path in (p for paths in cohort.channel_paths() for p in paths):
            load_img(path)
    return cohort
