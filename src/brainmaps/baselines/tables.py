"""Read a table of features (FreeSurfer, DLMUSE, ``brainmaps morphometry``) for a cohort.

The code of Kan et al. fed the subject ID to its morphometry models as if it were a
feature. :func:`load_features` keeps only numeric measurements: identifier-like columns
(IDs, dates, release names, sites, row numbers), text columns and constant columns are
dropped with a :class:`~brainmaps.exceptions.BrainmapsWarning` naming them.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError

__all__ = ["ID_TOKENS", "find_identifier_columns", "load_features"]

#: Words that mark a column name as an identifier, not a measurement.
ID_TOKENS = frozenset(
    "id ids uid rid ptid subject subj participant session ses visit date datetime time "
    "timestamp year release version scan scanner site study phase index idx".split()
)
_SUBJECT_COLS = ("participant_id", "subject", "subject_id", "sub", "subjid", "ptid", "id")
_SESSION_COLS = ("session", "ses", "session_id")
_MISSING = ("", "na", "n/a", "nan", "none", "null")
_MIN_ROWS_FOR_ORDER = 10  # a measurement is monotonic by chance with p = 2 / n!


def _tokens(name: str) -> set[str]:
    """Words of a column name: ``"SubjectID"`` -> {subject, id}, ``"scan_date"`` -> ..."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return {t.lower() for t in re.split(r"[^A-Za-z]+", spaced) if t}


def _numeric(column: pd.Series) -> pd.Series | None:
    """The column as floats (missing values NaN), or None if some value is not a number."""
    text = column.astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING)
    values = pd.to_numeric(text.where(~missing), errors="coerce")
    return None if (values.isna() & ~missing).any() else values.astype(float)


def _looks_like_row_number(values: pd.Series) -> bool:
    v = values.to_numpy(dtype=float)
    if len(v) < _MIN_ROWS_FOR_ORDER or not np.isfinite(v).all() or np.any(v != np.round(v)):
        return False
    if len(np.unique(v)) != len(v):
        return False
    steps = np.diff(v)
    return bool(np.all(steps > 0) or np.all(steps < 0))


def find_identifier_columns(table: pd.DataFrame) -> dict[str, str]:
    """Find the columns of a table that are not usable numeric features.

    Parameters
    ----------
    table : pandas.DataFrame
        The features as read (values may be text), rows in file order.

    Returns
    -------
    dict
        Column -> reason, for columns whose name contains an identifier word
        (:data:`ID_TOKENS`: id, subject, session, date, release, version, scan, site,
        ...), columns holding text, and columns of unique, strictly monotonic integers
        (row or subject numbers; tables of at least 10 rows).
    """
    reasons = {}
    for column in table.columns:
        words = sorted(_tokens(column) & ID_TOKENS)
        values = _numeric(table[column])
        if words:
            reasons[column] = f"identifier-like name ({', '.join(words)})"
        elif values is None:
            reasons[column] = "not numeric"
        elif _looks_like_row_number(values):
            reasons[column] = "unique increasing integers (a row or subject number)"
    return reasons


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ConfigError(
            f"features table {path} does not exist; give a TSV/CSV of regional features "
            "(e.g. made by 'brainmaps morphometry')."
        )
    sep = {".tsv": "\t", ".csv": ","}.get(path.suffix.lower())
    try:
        table = pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, engine="python" if sep is None else "c"
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"features table {path} could not be parsed ({exc}).") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _pick(table: pd.DataFrame, given, candidates, path: Path, required: bool) -> str | None:
    if given is not None:
        if given not in table.columns:
            raise ConfigError(
                f"subject_col={given!r} is not a column of {path}; columns: "
                f"{', '.join(table.columns[:20])}."
            )
        return given
    lower = {c.lower(): c for c in reversed(table.columns)}
    found = next((lower[c] for c in candidates if c in lower), None)
    if found is None and required:
        raise CohortError(
            f"features table {path} has no subject column: expected one of "
            f"{', '.join(candidates)}, found {', '.join(table.columns[:20])}. Rename it, or "
            "pass subject_col=..."
        )
    return found


def _keys(values, strip: str) -> pd.Series:
    return pd.Series(values, dtype=str).fillna("").str.strip().str.removeprefix(strip)


def _row_positions(table, path, subjects, sessions, subject_col, session_col) -> np.ndarray:
    """Row of the table for each requested (subject, session)."""
    keys = _keys(table[subject_col], "sub-")
    wanted = _keys(subjects, "sub-")
    use_session = session_col is not None and sessions is not None and any(sessions)
    if use_session:
        keys = keys + "/" + _keys(table[session_col], "ses-")
        wanted = wanted + "/" + _keys(sessions, "ses-")
    duplicated = keys[keys.duplicated()].unique()
    if len(duplicated):
        raise CohortError(
            f"features table {path} has several rows for {', '.join(duplicated[:5])}; keep "
            "one row per subject (or add a session column matching the cohort's)."
        )
    lookup = pd.Series(np.arange(len(keys)), index=keys.to_numpy())
    absent = wanted[~wanted.isin(lookup.index)].unique()
    if len(absent):
        more = f" and {len(absent) - 10} more" if len(absent) > 10 else ""
        raise CohortError(
            f"features table {path} has no row for {len(absent)} subject(s) of the cohort: "
            f"{', '.join(absent[:10])}{more}. Add them, or drop them from the cohort."
        )
    return lookup.loc[wanted.to_numpy()].to_numpy()


def load_features(
    path: str | os.PathLike,
    subjects: Sequence[str],
    sessions: Sequence[str] | None = None,
    *,
    subject_col: str | None = None,
    exclude: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a features table and align it with a cohort's rows.

    Parameters
    ----------
    path : str or os.PathLike
        TSV or CSV (other suffixes: separator sniffed) with a subject column
        (participant_id, subject, subject_id, sub, subjid, ptid or id; ``sub-`` prefixes
        are ignored) and one column per feature.
    subjects : sequence of str
        Subject of each cohort row (e.g. ``RunFolder.table["subject"]``).
    sessions : sequence of str, optional
        Session of each row; used when the table has a session column too.
    subject_col : str, optional
        The table's subject column, if not one of the names above.
    exclude : sequence of str
        Columns to drop as well (e.g. the run's target, which would leak the label).

    Returns
    -------
    pandas.DataFrame
        One row per requested subject, in order (index 0..n-1), float columns: the
        numeric features. Missing values are NaN.

    Raises
    ------
    CohortError
        If a requested subject has no row, a subject has several rows, or no feature
        remains.

    Warns
    -----
    BrainmapsWarning
        Naming the dropped columns and why: identifier-like names, text, row numbers,
        ``exclude``, or constant over the cohort's rows.
    """
    path = Path(path)
    table = _read(path)
    subject_col = _pick(table, subject_col, _SUBJECT_COLS, path, True)
    session_col = _pick(table, None, _SESSION_COLS, path, False)
    rows = _row_positions(table, path, subjects, sessions, subject_col, session_col)
    candidates = table.drop(columns=[c for c in (subject_col, session_col) if c])
    dropped = find_identifier_columns(candidates)
    for column in exclude:
        if column in candidates.columns:
            dropped[column] = "the target being predicted"
    kept = [c for c in candidates.columns if c not in dropped]
    features = pd.DataFrame(
        {c: _numeric(candidates[c]).to_numpy()[rows] for c in kept}, index=np.arange(len(rows))
    )
    for column in features.columns[features.nunique(dropna=True) <= 1]:
        dropped[column] = "constant over the cohort"
    features = features.drop(columns=[c for c in features.columns if c in dropped])
    _warn_dropped(dropped, path)
    if features.shape[1] == 0:
        raise CohortError(f"features table {path} has no usable numeric feature column left.")
    return features


def _warn_dropped(dropped: dict[str, str], path: Path) -> None:
    if not dropped:
        return
    by_reason: dict[str, list[str]] = {}
    for column, reason in dropped.items():
        by_reason.setdefault(reason, []).append(repr(column))
    parts = "; ".join(f"{', '.join(cols)}: {reason}" for reason, cols in by_reason.items())
    warnings.warn(
        f"{len(dropped)} column(s) of {path} are not used as features ({parts}). Rename a "
        "column if it is a real measurement.",
        BrainmapsWarning,
        stacklevel=3,
    )
