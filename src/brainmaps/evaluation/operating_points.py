"""Operating points of a binary classifier: thresholds chosen by a rule, honestly.

A threshold turns scores into calls (``score >= threshold``: positive). BrainImageNet
(Lu et al. 2022, *A practical Alzheimer's disease classifier via brain imaging-based deep
learning on 85,721 samples*, J. Big Data) reports sensitivity and specificity at chosen
operating points of its fold ensembles; this module chooses them without looking at the
subjects they are evaluated on. For each outer fold ``k`` the threshold is chosen on the
out-of-fold scores of the *other* folds and applied to fold ``k``
(:func:`nested_calls`), so the pooled metrics are those a new cohort would see; the
threshold for new data is chosen on every out-of-fold score.

Rules (:func:`parse_rule`): a value in (0, 1) such as ``"0.5"``; ``"youden"``, the
maximum of Youden's J = sensitivity + specificity - 1 (Youden 1950, *Cancer* 3:32-35);
``"sens=S"``, the highest threshold whose sensitivity is at least S; ``"spec=S"``, the
lowest threshold whose specificity is at least S. Candidate thresholds are the observed
scores (as in :func:`sklearn.metrics.roc_curve`), plus ``inf`` (nobody positive).

NumPy and scikit-learn only (no torch). The positive class is class 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from brainmaps.exceptions import ConfigError

__all__ = [
    "METRICS",
    "ThresholdRule",
    "bootstrap_metrics",
    "calibration_curve",
    "choose_threshold",
    "confusion_metrics",
    "metrics_at",
    "nested_calls",
    "operating_points",
    "parse_rule",
    "roc_points",
]

#: Metrics of a set of calls, in table order.
METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
_HELP = "write '0.5', 'youden', 'sens=0.9', 'spec=0.9' or a value in (0, 1) such as '0.3'"


@dataclass(frozen=True)
class ThresholdRule:
    """How a threshold is chosen.

    Attributes
    ----------
    kind : {"value", "youden", "sensitivity", "specificity"}
    target : float or None
        The value, or the sensitivity / specificity to reach (``None`` for Youden).
    """

    kind: str
    target: float | None = None

    @property
    def name(self) -> str:
        """str : The rule as written (``"0.5"``, ``"youden"``, ``"sens=0.9"``, ...)."""
        prefix = {"sensitivity": "sens=", "specificity": "spec=", "value": ""}
        return "youden" if self.kind == "youden" else f"{prefix[self.kind]}{self.target:g}"


def parse_rule(rule: str | float | ThresholdRule, name: str = "threshold") -> ThresholdRule:
    """Read a threshold rule: ``"0.5"``, ``"youden"``, ``"sens=S"``, ``"spec=S"`` or a value.

    Parameters
    ----------
    rule : str, float or ThresholdRule
    name : str
        The parameter's name, for the error message.

    Returns
    -------
    ThresholdRule

    Raises
    ------
    ConfigError
        A rule of another form, or a value or target outside (0, 1).
    """
    if isinstance(rule, ThresholdRule):
        return rule
    if isinstance(rule, bool):
        raise ConfigError(f"{name} must be a rule; got {rule!r}; {_HELP}.")
    text = str(rule).strip().lower()
    if text == "youden":
        return ThresholdRule("youden")
    kind, _, number = text.rpartition("=")
    kinds = {"": "value", "sens": "sensitivity", "spec": "specificity"}
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if kind not in kinds or not 0 < value < 1:
        raise ConfigError(f"{name} must be a threshold rule, got {rule!r}; {_HELP}.")
    return ThresholdRule(kinds[kind], value)


def _check(y, score) -> tuple[np.ndarray, np.ndarray]:
    y, score = np.asarray(y), np.asarray(score, dtype=float)
    if y.ndim != 1 or y.shape != score.shape:
        raise ConfigError(
            f"y and score must be 1-D of one length; got shapes {y.shape} and {score.shape}."
        )
    if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
        raise ConfigError(
            f"y must hold binary labels 0 and 1 (both present), got values {np.unique(y)[:5]}; "
            "operating points need a binary classification (class 1 positive)."
        )
    if not np.isfinite(score).all():
        raise ConfigError("score has non-finite values; give finite scores or probabilities.")
    return y.astype(int), score


def _curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (descending, ``inf`` first) and sensitivity, specificity at each."""
    thresholds = np.concatenate([[np.inf], np.unique(score)[::-1]])
    calls = score[None, :] >= thresholds[:, None]
    sens = (calls & (y == 1)).sum(axis=1) / (y == 1).sum()
    spec = (~calls & (y == 0)).sum(axis=1) / (y == 0).sum()
    return thresholds, sens, spec


def choose_threshold(y, score, rule: str | float | ThresholdRule) -> float:
    """The threshold that ``rule`` picks on labelled scores (positive: ``score >= t``).

    Parameters
    ----------
    y : array-like of {0, 1}
    score : array-like of float
        Probability of class 1, or any score that grows with it.
    rule : str, float or ThresholdRule
        See :func:`parse_rule`. Youden ties go to the highest threshold.

    Returns
    -------
    float
        One of the scores, ``inf`` when a specificity target needs nobody positive, or
        the rule's value.
    """
    rule = parse_rule(rule)
    if rule.kind == "value":
        return float(rule.target)
    y, score = _check(y, score)
    thresholds, sens, spec = _curve(y, score)
    if rule.kind == "youden":
        return float(thresholds[np.argmax(sens + spec - 1)])
    if rule.kind == "sensitivity":
        return float(thresholds[np.flatnonzero(sens >= rule.target - 1e-12)[0]])
    return float(thresholds[np.flatnonzero(spec >= rule.target - 1e-12)[-1]])


def _rates(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "accuracy": (tp + tn) / (tp + fp + tn + fn),
        }


def confusion_metrics(y, predicted) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV and accuracy of binary calls.

    Parameters
    ----------
    y : array-like of {0, 1}
        True labels.
    predicted : array-like of bool or {0, 1}
        The calls (1 / True: positive).

    Returns
    -------
    dict of str to float
        :data:`METRICS`; NaN when a denominator is zero (e.g. PPV with no positive call).
    """
    y, hit = np.asarray(y).astype(int) == 1, np.asarray(predicted).astype(bool)
    tp, fp = np.sum(hit & y), np.sum(hit & ~y)
    tn, fn = np.sum(~hit & ~y), np.sum(~hit & y)
    return {k: float(v) for k, v in _rates(tp, fp, tn, fn).items()}


def metrics_at(y, score, threshold: float) -> dict[str, float]:
    """:func:`confusion_metrics` of the calls ``score >= threshold``."""
    return confusion_metrics(y, np.asarray(score, dtype=float) >= threshold)


def bootstrap_metrics(
    y, predicted, *, n_bootstrap: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals of :data:`METRICS` by stratified bootstrap.

    Subjects are drawn with replacement within each class (so every resample keeps the
    class counts; Efron & Tibshirani 1993, *An Introduction to the Bootstrap*, ch. 13).

    Parameters
    ----------
    y : array-like of {0, 1}
    predicted : array-like of bool or {0, 1}
        Fixed calls (the thresholds' own variability is not resampled).
    n_bootstrap : int
        Resamples (default 1000).
    level : float
        Coverage of the interval (default 0.95).
    seed : int
        Seed of the resampling: the same seed gives the same intervals.

    Returns
    -------
    dict of str to (float, float)
        ``(low, high)`` per metric.
    """
    if int(n_bootstrap) < 1 or not 0 < level < 1:
        raise ConfigError(
            f"n_bootstrap must be >= 1 and level in (0, 1); got {n_bootstrap!r} and {level!r}."
        )
    y, hit = np.asarray(y).astype(int) == 1, np.asarray(predicted).astype(bool)
    rng = np.random.default_rng(seed)
    counts = {}
    for cls in (True, False):
        calls = hit[y == cls]
        draws = calls[rng.integers(0, len(calls), size=(int(n_bootstrap), len(calls)))]
        counts[cls] = draws.sum(axis=1), (~draws).sum(axis=1)
    (tp, fn), (fp, tn) = counts[True], counts[False]
    alpha = 100 * (1 - level) / 2
    out = {}
    for key, values in _rates(tp, fp, tn, fn).items():
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, [alpha, 100 - alpha]) if len(finite) else (np.nan,) * 2
        out[key] = (float(low), float(high))
    return out


def roc_points(y, score) -> pd.DataFrame:
    """The ROC curve: ``fpr, tpr, threshold`` (every observed score; the first is ``inf``)."""
    y, score = _check(y, score)
    fpr, tpr, thr = roc_curve(y, score, drop_intermediate=False)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})


def calibration_curve(y, score, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted probability against the observed positive rate, in quantile bins.

    Parameters
    ----------
    y : array-like of {0, 1}
    score : array-like of float
        Probabilities of class 1.
    n_bins : int
        Bins of (about) equal counts; tied quantiles merge bins.

    Returns
    -------
    pandas.DataFrame
        ``bin, n, mean_predicted, observed`` per non-empty bin: a calibrated model has
        ``observed`` close to ``mean_predicted``.
    """
    y, score = _check(y, score)
    if int(n_bins) < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}.")
    edges = np.unique(np.quantile(score, np.linspace(0, 1, int(n_bins) + 1)))
    index = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = [
        {"bin": b, "n": int(m.sum()), "mean_predicted": score[m].mean(), "observed": y[m].mean()}
        for b in np.unique(index)
        for m in [index == b]
    ]
    return pd.DataFrame(rows, columns=["bin", "n", "mean_predicted", "observed"])


def nested_calls(y, score, folds, rule) -> tuple[np.ndarray, dict[int, float]]:
    """Calls of every subject with a threshold chosen on the other folds only.

    Parameters
    ----------
    y : array-like of {0, 1}
    score : array-like of float
        Out-of-fold scores (each from the model that did not train on the subject).
    folds : array-like of int
        The outer fold of each subject.
    rule : str, float or ThresholdRule

    Returns
    -------
    calls : numpy.ndarray of bool
        ``score >= t_k`` for each subject of fold ``k``.
    thresholds : dict of int to float
        ``t_k``: chosen by ``rule`` on the subjects outside fold ``k``.

    Raises
    ------
    ConfigError
        Fewer than two folds, or the subjects outside a fold lack a class.
    """
    y, score = _check(y, score)
    folds, rule = np.asarray(folds), parse_rule(rule)
    if folds.shape != y.shape or len(np.unique(folds)) < 2:
        raise ConfigError(
            f"folds must give one fold per subject, with at least 2 folds; got shape "
            f"{folds.shape} and folds {np.unique(folds).tolist()}."
        )
    calls, chosen = np.zeros(len(y), dtype=bool), {}
    for k in np.unique(folds):
        inside = folds == k
        if rule.kind != "value" and len(np.unique(y[~inside])) < 2:
            raise ConfigError(
                f"the subjects outside fold {k} are all of one class, so rule {rule.name!r} "
                "cannot be chosen on them; use more folds, stratified folds or a value rule."
            )
        chosen[k.item()] = choose_threshold(y[~inside], score[~inside], rule)
        calls[inside] = score[inside] >= chosen[k.item()]
    return calls, chosen


def operating_points(
    y,
    score,
    folds,
    rules: Sequence[str | float | ThresholdRule],
    *,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per rule: the threshold for new data and its nested out-of-fold metrics.

    Parameters
    ----------
    y, score, folds
        Out-of-fold labels (1: positive), scores and outer folds.
    rules : sequence of str, float or ThresholdRule
        See :func:`parse_rule`; repeated rules are kept once.
    n_bootstrap, level, seed
        See :func:`bootstrap_metrics` (applied to the nested calls).

    Returns
    -------
    pandas.DataFrame
        ``rule, threshold`` (chosen on every out-of-fold score: use it on new data),
        each metric of :data:`METRICS` on the nested calls with ``<metric>_low`` and
        ``<metric>_high``, ``threshold_fold_mean``, ``threshold_fold_std``,
        ``threshold_fold_min``, ``threshold_fold_max`` (stability of the per-fold choice),
        ``n``, ``n_positive``.
    """
    y, score = _check(y, score)
    parsed = list({r.name: r for r in map(parse_rule, rules)}.values())
    rows = []
    for rule in parsed:
        calls, per_fold = nested_calls(y, score, folds, rule)
        point = confusion_metrics(y, calls)
        ci = bootstrap_metrics(y, calls, n_bootstrap=n_bootstrap, level=level, seed=seed)
        row = {"rule": rule.name, "threshold": choose_threshold(y, score, rule)}
        for m in METRICS:
            row.update({m: point[m], f"{m}_low": ci[m][0], f"{m}_high": ci[m][1]})
        values = np.array(list(per_fold.values()))
        row.update(
            threshold_fold_mean=values.mean(), threshold_fold_std=values.std(ddof=0),
            threshold_fold_min=values.min(), threshold_fold_max=values.max(),
            n=len(y), n_positive=int(y.sum()),
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)
