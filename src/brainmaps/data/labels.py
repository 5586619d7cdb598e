"""The label column of a cohort: missing values, task (classes or values), class indices.

Used by :func:`brainmaps.data.cohort.load_cohort`; every message names the column and
the table, lists examples of what was found and says how to fix it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainmaps.exceptions import CohortError

__all__ = ["MAX_AUTO_CLASSES"]

#: With ``task="auto"``, integer labels with at most this many distinct values are classes.
MAX_AUTO_CLASSES = 10


def _examples(values, n: int = 5) -> str:
    values = [str(v) for v in values]
    more = f" and {len(values) - n} more" if len(values) > n else ""
    return ", ".join(values[:n]) + more


def _clean(series: pd.Series) -> pd.Series:
    """Strip strings; turn missing values into ''."""
    return series.fillna("").astype(str).str.strip()


def _missing_labels(frame, target, source, drop_missing, notes) -> pd.DataFrame:
    values = _clean(frame[target])
    missing = values.str.lower().isin(["", "n/a", "na", "nan"])
    if not missing.any():
        return frame
    subjects = frame.loc[missing, "_subject"]
    message = f"target {target!r} is missing for {int(missing.sum())} of {len(frame)} scans"
    if not drop_missing:
        raise CohortError(
            f"{message} in {source} (subjects {_examples(subjects)}); fill them in, or pass "
            "drop_missing=True (CLI --drop-missing) to drop those scans."
        )
    if missing.all():
        raise CohortError(
            f"{message} in {source}, so no scan is left; check that {target!r} is the label "
            "column (pass another target, CLI --target COL) or fill the labels in."
        )
    notes.append(f"{message} in {source}; dropped subjects {_examples(subjects)}.")
    return frame.loc[~missing].reset_index(drop=True)


def _resolve_task(values: pd.Series, task: str, classes, target: str, source) -> str:
    numeric = pd.to_numeric(values, errors="coerce")
    all_numeric = bool(numeric.notna().all())
    if task == "regression":
        if not all_numeric:
            bad = values[numeric.isna()].unique()
            raise CohortError(
                f"target {target!r} of {source} must be numeric for regression, found "
                f"{_examples(bad)}; use task='classification' or fix the values."
            )
        return task
    if task == "classification" or classes is not None:
        return "classification"
    if not all_numeric:
        _refuse_mixed(values, numeric, target, source)
        return "classification"
    is_integer = bool(np.all(numeric == np.round(numeric)))
    small = numeric.nunique() <= MAX_AUTO_CLASSES
    return "classification" if is_integer and small else "regression"


def _refuse_mixed(values: pd.Series, numeric: pd.Series, target: str, source) -> None:
    """With ``task="auto"``, refuse a label column mixing numbers and text."""
    if numeric.isna().all():
        return
    integers = numeric.notna() & (numeric == np.round(numeric))
    kinds = {
        "integers": values[integers].unique(),
        "decimals": values[numeric.notna() & ~integers].unique(),
        "text": values[numeric.isna()].unique(),
    }
    found = "; ".join(f"{k}: {_examples(v, 3)}" for k, v in kinds.items() if len(v))
    raise CohortError(
        f"target column {target!r} of {source} mixes numbers and text ({found}); clean the "
        "column (a typo, or a placeholder for a missing value: write n/a and pass "
        "drop_missing=True, CLI --drop-missing), or choose the task: task='classification' "
        "(CLI --task classification) makes every value a class name."
    )


def _encode_classes(values: pd.Series, classes, target: str, source):
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and np.all(numeric == np.round(numeric)):
        values = numeric.astype(np.int64).astype(str)  # "1.0" and "1" are one class
    present = set(values)
    if classes is None:
        key = float if numeric.notna().all() else str
        order = tuple(sorted(present, key=key))
    else:
        order = tuple(str(c) for c in classes)
        unknown = sorted(present - set(order))
        if len(set(order)) != len(order) or unknown:
            raise CohortError(
                f"classes={list(order)} must be unique and cover every label of target "
                f"{target!r} in {source}; labels not listed: {_examples(unknown)}."
            )
    if len(present) < 2:
        raise CohortError(
            f"target {target!r} of {source} has {len(present)} class(es) "
            f"({_examples(present)}); classification needs at least 2 (for a numeric target "
            "use task='regression')."
        )
    mapping = {c: i for i, c in enumerate(order)}
    return values, values.map(mapping).astype(np.int64), order
