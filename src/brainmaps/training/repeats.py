"""Repeated cross-validation: the seeds of the repeats and their pooled metrics table.

With ``training.repeats = R > 1`` the outer k-fold split is drawn R times. Repeat 0 is
the run's own split (``folds.tsv``, ``fold-<k>/``, ``predictions.tsv``, ``metrics.tsv``),
the one every later stage (explain, regions, report, predict, serve) reads. Repeat
``r > 0`` is trained exactly as repeat 0 with the training seed
``seed + r * REPEAT_SEED_STEP``: that seed draws its outer split (stratified, or grouped
by site with ``cv="leave-sites-out"``), its inner validation splits (``seed_r + k``) and
its weights and batch order (``seed_r + k + 1000 j`` for member j); its files live in
``repeats/repeat-<r>/``, laid out as a run folder
(:meth:`~brainmaps.run.layout.RunLayout.repeat`). The repeats only add folds: to
``metrics_repeats.tsv`` (one row per repeat and fold, then the mean and standard
deviation over all R x k folds) and to the paired comparison with the baselines
(:mod:`brainmaps.baselines.compare`, Bouckaert & Frank 2004).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd

from brainmaps.evaluation.metrics import summarize_folds
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.config import RunConfig

__all__ = [
    "REPEAT_SEED_STEP",
    "check_repeats",
    "pooled_repeat_metrics",
    "repeat_config",
    "warn_same_splits",
]

#: Repeat ``r`` trains with the seed ``training.seed + r * REPEAT_SEED_STEP``. Within one
#: repeat the seeds used are ``seed_r + k`` (fold k's inner split and weights) and
#: ``seed_r + k + 1000 j`` (ensemble member j), so with fewer than 1000 folds and 100
#: members no two repeats share a seed.
REPEAT_SEED_STEP = 100_000


def check_repeats(config: RunConfig) -> None:
    """Refuse repeats of a split that no seed changes.

    Raises
    ------
    ConfigError
        With ``repeats > 1`` and a user split (``folds_file``, ``cv="file"``) or
        ``cv="leave-one-site-out"``: every repeat would be the same split.
    """
    t = config.training
    if t.repeats <= 1:
        return
    if t.folds_file or t.cv == "file":
        why = "a folds file is one fixed split"
    elif t.cv == "leave-one-site-out":
        why = "leave-one-site-out has one fold per site, whatever the seed"
    else:
        return
    raise ConfigError(
        f"--repeats {t.repeats} (training.repeats): {why}, so every repeat would be the "
        "same split; use --repeats 1, or a seeded split (--cv stratified or --cv "
        "leave-sites-out) to repeat the cross-validation."
    )


def repeat_config(config: RunConfig, repeat: int) -> RunConfig:
    """The configuration repeat ``r`` trains with: the run's, seeded
    ``seed + r * REPEAT_SEED_STEP`` (``config`` itself for repeat 0)."""
    if int(repeat) == 0:
        return config
    seed = config.training.seed + int(repeat) * REPEAT_SEED_STEP
    return config.replace(training=replace(config.training, seed=seed))


def _partition(roles: pd.DataFrame) -> frozenset:
    tests = roles[roles["role"] == "test"]
    keys = tests["subject"].astype(str) + "/" + tests["session"].astype(str)
    return frozenset(frozenset(part) for _, part in keys.groupby(tests["fold"].to_numpy()))


def warn_same_splits(roles: list[pd.DataFrame]) -> None:
    """Warn when a repeat's outer split equals an earlier one (up to fold numbering),
    e.g. leave-sites-out with as many folds as sites: that repeat adds no information."""
    seen: dict[frozenset, int] = {}
    for r, table in enumerate(roles):
        key = _partition(table)
        if key in seen:
            warnings.warn(
                f"repeat {r} drew the same outer split as repeat {seen[key]} (e.g. "
                "leave-sites-out with as many folds as sites); its folds repeat those of "
                f"repeat {seen[key]} and make the pooled test look surer than it is. Use "
                "fewer folds or --repeats 1.",
                BrainmapsWarning,
                stacklevel=3,
            )
        seen.setdefault(key, r)


def pooled_repeat_metrics(per_repeat: list[pd.DataFrame]) -> pd.DataFrame:
    """One table of every repeat's fold metrics, then their mean and std.

    Parameters
    ----------
    per_repeat : list of pandas.DataFrame
        Repeat r's ``metrics.tsv`` (fold rows, then ``mean`` and ``std``), in repeat order.

    Returns
    -------
    pandas.DataFrame
        ``repeat`` (str), ``fold`` and the metric columns: one row per (repeat, fold),
        then ``mean`` and ``std`` rows (``repeat == "all"``) over all of them (sample
        standard deviation, ddof=1).
    """
    rows = []
    for r, table in enumerate(per_repeat):
        folds = table[~table["fold"].astype(str).isin(("mean", "std"))]
        rows.append(folds.assign(fold=folds["fold"].astype(str)).assign(repeat=str(r)))
    pooled = pd.concat(rows, ignore_index=True)
    pooled = pooled[["repeat", *[c for c in pooled.columns if c != "repeat"]]]
    summary = summarize_folds(pooled)
    summary["repeat"] = np.where(summary["fold"].isin(("mean", "std")), "all", summary["repeat"])
    return summary
