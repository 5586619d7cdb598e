"""The out-of-fold scores of a binary run, and the threshold a rule picks on them.

``brainmaps predict --threshold`` and ``brainmaps serve --threshold`` call new scans with
a threshold chosen on the run's out-of-fold predictions (never on the scans themselves):
:func:`resolve_threshold` reads it from ``analysis/thresholds.tsv`` when that table is
current (``brainmaps thresholds``), else chooses it with the same function,
:func:`brainmaps.evaluation.operating_points.choose_threshold`.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from brainmaps.evaluation.operating_points import choose_threshold, parse_rule
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run

__all__ = ["check_binary", "oof_scores", "resolve_threshold"]


def check_binary(run: RunFolder, what: str = "operating points") -> None:
    """Raise a ConfigError unless ``run`` is a two-class classification run."""
    if not run.task.is_classification or len(run.classes) != 2:
        classes = list(run.classes) or "none"
        raise ConfigError(
            f"{what} need a binary classification run; run {run.path} is {run.task.name} "
            f"with classes {classes}. Train on a two-class target."
        )


def oof_scores(run_dir: str | os.PathLike | RunFolder) -> tuple[np.ndarray, ...]:
    """Labels, scores and folds of a binary run's out-of-fold predictions.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder

    Returns
    -------
    y : numpy.ndarray of int
        1 for the positive class (the run's second class, ``classes[1]``), else 0.
    score : numpy.ndarray of float
        ``p_<classes[1]>`` from the fold model that did not train on the scan.
    folds : numpy.ndarray of int
        The outer fold of each scan.

    Raises
    ------
    ConfigError
        Not a binary classification run, or no complete ``predictions.tsv``.
    """
    run = open_run(run_dir)
    check_binary(run)
    path = run.layout.predictions
    if not path.is_file():
        raise ConfigError(
            f"{path} not found: the run has no out-of-fold predictions; finish or resume "
            f"'brainmaps train' for {run.path} first."
        )
    table = pd.read_csv(path, sep="\t", dtype={"label": str}, keep_default_na=False)
    column = f"p_{run.classes[1]}"
    missing = {"fold", "label", column} - set(table)
    unknown = sorted(set(table.get("label", [])) - set(run.classes))
    if missing or unknown:
        raise ConfigError(
            f"{path} must have columns fold, label and {column} with labels in "
            f"{list(run.classes)}; missing {sorted(missing)}, unknown labels {unknown}. "
            "Re-run 'brainmaps train' on the run to rewrite it."
        )
    y = (table["label"] == run.classes[1]).to_numpy(dtype=int)
    return y, table[column].to_numpy(dtype=float), table["fold"].to_numpy(dtype=int)


def _from_table(run: RunFolder, name: str) -> float | None:
    """The rule's threshold in ``analysis/thresholds.tsv`` if the table is current."""
    path, preds = run.layout.thresholds, run.layout.predictions
    if not path.is_file() or path.stat().st_mtime < preds.stat().st_mtime:
        return None
    table = pd.read_csv(path, sep="\t", dtype={"rule": str})
    rows = table.loc[table["rule"] == name, "threshold"] if "rule" in table else []
    return float(rows.iloc[0]) if len(rows) else None


def resolve_threshold(
    run_dir: str | os.PathLike | RunFolder, rule: str | float
) -> tuple[str, float]:
    """The threshold of ``rule`` for new scans of a binary run.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
    rule : str or float
        ``"0.5"``, ``"youden"``, ``"sens=0.9"``, ``"spec=0.9"`` or a value in (0, 1)
        (:func:`~brainmaps.evaluation.operating_points.parse_rule`).

    Returns
    -------
    (str, float)
        The rule as written and its threshold on ``p_<classes[1]>``: the value itself,
        else chosen on every out-of-fold prediction of the run (read from a current
        ``analysis/thresholds.tsv`` when it has the rule).
    """
    run = open_run(run_dir)
    parsed = parse_rule(rule)
    check_binary(run, f"threshold {parsed.name!r}")
    if parsed.kind == "value":
        return parsed.name, float(parsed.target)
    y, score, _ = oof_scores(run)
    stored = _from_table(run, parsed.name)
    return parsed.name, stored if stored is not None else choose_threshold(y, score, parsed)
