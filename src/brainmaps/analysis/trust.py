"""The trust table: per attribution method, what a run's checks found about its maps.

Each analysis of a run tests one property a trustworthy map needs; this module gathers
their tables (tables in, one table out: nothing is recomputed) into one row per method,
each check with its control, a one-line reading, and a verdict. The checks and the
bounds of their pass / fail rules:

- **localisation** (``analysis/localisation.tsv``, ``brainmaps localise``; synthetic
  cohorts or a given truth mask): ROC AUC of the class-mean map (the ``conjoined`` sum of
  the class means; the first class-mean row when there is none) as a voxel classifier of
  the planted mask. Chance is 0.5; it passes above :data:`LOCALISATION_BOUND` (0.6). Maps
  that find the planted effect score 0.8-0.95 on the demo and the test cohorts, maps of
  an untrained model near 0.5; 0.6 asks for a ranking clearly above chance while leaving
  room for class means of a few dozen subjects.
- **deletion** and **insertion** (``analysis/faithfulness.tsv``, ``brainmaps
  faithfulness``; Petsiuk et al. 2018): the mean area under the class-probability curve
  as the map's top voxels are removed (lower is better) or put back (higher is better),
  against the same curves for a seeded random ranking of the same subjects
  (``auc_random``). Each passes when it is better than random by more than
  :data:`FAITHFULNESS_MARGIN` (0: strictly better; the reading shows both areas, so a
  method within noise of random is visible as such).
- **sanity** (``analysis/sanity_summary.tsv``, ``brainmaps sanity``; Adebayo et al.
  2018): the sanity step's own rule, recorded in its ``passed`` and ``bound`` columns:
  the median |Spearman| between the trained and the fully randomised model's maps stays
  at or below the bound (:data:`brainmaps.analysis.sanity.SPEARMAN_BOUND`, 0.5), and,
  when the data randomisation test was run (``data_spearman_abs``, ``brainmaps sanity
  RUN --data-randomisation``), so does the median between the trained model's maps and
  those of a model trained on permuted labels: a method fails when it fails either. A
  summary row without a value (every trained map constant) fails, as the step says.
- **ROAR** (``analysis/roar.tsv``, remove and retrain; Hooker et al. 2019): read when
  present, with one row per method and removed fraction (several rows per fraction,
  e.g. one per fold or seed, are averaged): ``method, fraction, accuracy,
  accuracy_random`` (accuracy of a model retrained on inputs whose top ``fraction`` of
  voxels by the method's maps, or the same number of random voxels, were removed).
  Rows with ``fraction`` 0 are ignored. The drop beyond random is the mean over the
  removed fractions of ``accuracy_random - accuracy`` (the method's accuracy drop minus
  random removal's, from any common starting accuracy); it passes above
  :data:`ROAR_MARGIN` (0: removal by the map must hurt more than random removal).
- **cost** (``maps/<method>/maps.tsv``, ``brainmaps explain``): mean seconds per map
  (its ``seconds`` column). Information only: no verdict.

A check whose source table is missing is not measured: its values are NaN, its
``*_passed`` is empty and its reading names the command that measures it. The
``verdict`` is ``"fails"`` when any measured check fails, ``"passes"`` when every measured
check passes (the reading still lists what was not measured) and ``"incomplete"`` when
nothing was measured. Every method found in any source table gets a row: a failing
method is shown as failing, never left out.

References
----------
.. [1] V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized Input Sampling for Explanation
   of Black-box Models", BMVC 2018.
.. [2] J. Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
.. [3] S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim, "A Benchmark for Interpretability
   Methods in Deep Neural Networks", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainmaps.analysis.sanity import SPEARMAN_BOUND
from brainmaps.exceptions import ConfigError
from brainmaps.utils import truthy
from brainmaps.validation import check_float

__all__ = [
    "COLUMNS",
    "FAITHFULNESS_MARGIN",
    "LOCALISATION_BOUND",
    "LOCALISATION_CHANCE",
    "ROAR_MARGIN",
    "trust_table",
]

#: ROC AUC of a map against the planted mask above which it localises the effect.
LOCALISATION_BOUND = 0.6
#: ROC AUC of a map that ranks voxels at random.
LOCALISATION_CHANCE = 0.5
#: How much better than the random ranking a deletion / insertion area must be.
FAITHFULNESS_MARGIN = 0.0
#: How much more accuracy ROAR removal by the map must cost than random removal.
ROAR_MARGIN = 0.0

#: The command that writes each source table (named in "not measured" readings).
COMMANDS = {
    "localisation": "brainmaps localise",
    "faithfulness": "brainmaps faithfulness",
    "sanity": "brainmaps sanity",
    "roar": "brainmaps roar",
    "cost": "brainmaps explain",
}
_CHECKS = {
    "localisation": ("localisation_auc",),
    "deletion": ("deletion_auc", "deletion_auc_random"),
    "insertion": ("insertion_auc", "insertion_auc_random"),
    "sanity": (
        "sanity_spearman_abs",
        "sanity_bound",
        "sanity_data_spearman_abs",
        "sanity_data_accuracy",
    ),
    "roar": ("roar_accuracy", "roar_accuracy_random", "roar_drop"),
}
#: The columns of :func:`trust_table`, in order.
COLUMNS = [
    "method",
    *(c for check, values in _CHECKS.items()
      for c in (*values, f"{check}_passed", f"{check}_reading")),
    "seconds_per_map",
    "cost_reading",
    "verdict",
    "reading",
]  # fmt: skip
_REQUIRED = {
    "localisation": ("method", "map", "roc_auc"),
    "faithfulness": ("method", "mode", "auc", "auc_random"),
    "sanity": ("method", "spearman_abs"),
    "roar": ("method", "fraction", "accuracy", "accuracy_random"),
}


@dataclass(frozen=True)
class _Check:
    """One check of one method: its values, pass / fail (None: not measured), readings."""

    values: dict
    passed: bool | None
    reading: str
    short: str


@dataclass(frozen=True)
class _Context:
    run: str
    commands: dict
    ground_truth: bool
    combined_map: str | None
    localisation_bound: float
    margin: float
    roar_margin: float


def _nan(check: str) -> dict:
    return dict.fromkeys(_CHECKS.get(check, ()), np.nan)


def _not_measured(check: str, source: str, ctx: _Context, method: str | None = None) -> _Check:
    """No table (``method`` None) or no row of ``method`` in it."""
    label = "ROAR" if check == "roar" else check
    short = f"{label} not measured"
    if ctx.commands.get(source) is None:
        return _Check(_nan(check), None, f"not measured: no {label} step in this brainmaps", short)
    command = f"{ctx.commands[source]} {ctx.run}" + (f" --methods {method}" if method else "")
    scope = " for this method" if method else ""
    return _Check(_nan(check), None, f"not measured{scope}: run `{command}`", short)


def _digits(value: float, other: float) -> int:
    """Decimals that tell ``value`` from ``other`` (2, up to 4), so a reading never shows
    "0.66 vs random 0.66" for two areas that differ."""
    for digits in (2, 3, 4):
        if f"{value:.{digits}f}" != f"{other:.{digits}f}":
            return digits
    return 2


def _rows(table: pd.DataFrame, method: str) -> pd.DataFrame:
    return table[table["method"].astype(str) == method]


def _localisation(table: pd.DataFrame | None, method: str, ctx: _Context) -> _Check:
    if table is None and not ctx.ground_truth:
        reading = (
            "no ground truth: the cohort has no ground_truth_mask (`brainmaps localise "
            f"{ctx.run} --truth MASK` scores a known mask)"
        )
        return _Check(_nan("localisation"), None, reading, "no ground truth to localise")
    if table is None:
        return _not_measured("localisation", "localisation", ctx)
    rows = _rows(table, method)
    maps = rows["map"].astype(str)
    chosen = rows[maps == ctx.combined_map] if (maps == ctx.combined_map).any() else (
        rows[maps != "subjects"])  # fmt: skip
    auc = float(chosen["roc_auc"].iloc[0]) if len(chosen) else np.nan
    if not np.isfinite(auc):
        return _not_measured("localisation", "localisation", ctx, method)
    bound, passed = ctx.localisation_bound, auc > ctx.localisation_bound
    found = "localises" if passed else "does not localise"
    sign, d = (">" if passed else "<="), _digits(auc, bound)
    reading = (
        f"{found} the planted effect: class-mean map AUC {auc:.{d}f} {sign} {bound:g} "
        f"(chance {LOCALISATION_CHANCE:g})"
    )
    short = f"{found} the planted effect (AUC {auc:.{d}f})"
    return _Check({"localisation_auc": auc}, passed, reading, short)


def _faithfulness(table: pd.DataFrame | None, method: str, mode: str, ctx: _Context) -> _Check:
    if table is None:
        return _not_measured(mode, "faithfulness", ctx)
    rows = _rows(table, method)
    rows = rows[rows["mode"].astype(str) == mode]
    auc = float(pd.to_numeric(rows["auc"]).mean()) if len(rows) else np.nan
    rnd = float(pd.to_numeric(rows["auc_random"]).mean()) if len(rows) else np.nan
    if not (np.isfinite(auc) and np.isfinite(rnd)):
        return _not_measured(mode, "faithfulness", ctx, method)
    lower = mode == "deletion"
    passed = auc < rnd - ctx.margin if lower else auc > rnd + ctx.margin
    d = _digits(auc, rnd)
    numbers = f"{mode} {auc:.{d}f} vs random {rnd:.{d}f}"
    better = "lower" if lower else "higher"
    verdict = "better than random" if passed else "not better than random"
    reading = f"{mode} AUC {auc:.{d}f} vs random {rnd:.{d}f}: {verdict} ({better} is better)"
    short = numbers if passed else f"{numbers} (not better than random)"
    return _Check({f"{mode}_auc": auc, f"{mode}_auc_random": rnd}, passed, reading, short)


def _number(rows: pd.DataFrame, column: str) -> float:
    if column not in rows or not len(rows):
        return np.nan
    return float(pd.to_numeric(rows[column], errors="coerce").iloc[0])


def _data_reading(rows: pd.DataFrame, bound: float, ctx: _Context) -> tuple[bool | None, str]:
    """Pass / fail (None: not run) and reading of the data randomisation test."""
    rho, accuracy = _number(rows, "data_spearman_abs"), _number(rows, "data_accuracy")
    measured = _number(rows, "data_n_subjects")
    if not np.isfinite(rho) and not measured == 0:
        return None, (
            "data randomisation not measured (`"
            f"{ctx.commands['sanity']} {ctx.run} --data-randomisation` retrains on permuted "
            "labels)"
        )
    if not np.isfinite(rho):
        return False, "labels permuted: every trained map is constant"
    passed = rho <= bound
    sign, d = ("<=" if passed else ">"), _digits(rho, bound)
    model = f"; that model's accuracy {accuracy:.2f}" if np.isfinite(accuracy) else ""
    return passed, f"labels permuted: median |rho| {rho:.{d}f} {sign} {bound:g}{model}"


def _sanity(table: pd.DataFrame | None, method: str, ctx: _Context) -> _Check:
    if table is None:
        return _not_measured("sanity", "sanity", ctx)
    rows = _rows(table, method)
    if not len(rows):
        return _not_measured("sanity", "sanity", ctx, method)
    rho, bound = _number(rows, "spearman_abs"), _number(rows, "bound")
    bound = bound if np.isfinite(bound) else SPEARMAN_BOUND
    data_passed, data_reading = _data_reading(rows, bound, ctx)
    constant = not np.isfinite(rho) and "passed" in rows and not truthy(rows["passed"].iloc[0])
    if not np.isfinite(rho) and not constant and data_passed is None:
        return _not_measured("sanity", "sanity", ctx, method)
    if np.isfinite(rho):
        sign, d = ("<=" if rho <= bound else ">"), _digits(rho, bound)
        cascade = f"|rho| {rho:.{d}f} {sign} {bound:g}"
        model = f"median {cascade} between the trained and the fully randomised model's maps"
    else:
        cascade = model = "every trained map is constant"
    passed = truthy(rows["passed"].iloc[0]) if "passed" in rows else (
        rho <= bound and data_passed is not False)  # fmt: skip
    state = "passed" if passed else "failed"
    reading = f"sanity {state}: {model}; {data_reading}"
    short = f"sanity {state} ({cascade}"
    if data_passed is not None:
        short += f"; {data_reading.split(';')[0]}"
    values = {"sanity_spearman_abs": rho, "sanity_bound": bound,
              "sanity_data_spearman_abs": _number(rows, "data_spearman_abs"),
              "sanity_data_accuracy": _number(rows, "data_accuracy")}  # fmt: skip
    return _Check(values, bool(passed), reading, short + ")")


def _roar(table: pd.DataFrame | None, method: str, ctx: _Context) -> _Check:
    if table is None:
        return _not_measured("roar", "roar", ctx)
    rows = _rows(table, method)
    numbers = rows[["fraction", "accuracy", "accuracy_random"]].apply(pd.to_numeric)
    per = numbers[numbers["fraction"] > 0].groupby("fraction").mean()
    if per.empty or not np.isfinite(per.to_numpy()).all():
        return _not_measured("roar", "roar", ctx, method)
    acc, rnd = float(per["accuracy"].mean()), float(per["accuracy_random"].mean())
    drop = float((per["accuracy_random"] - per["accuracy"]).mean())
    passed = drop > ctx.roar_margin
    more = "more" if passed else "no more"
    fractions = ", ".join(f"{f:g}" for f in per.index)
    d = _digits(drop, ctx.roar_margin)
    reading = (
        f"ROAR accuracy {acc:.{d}f} vs random {rnd:.{d}f} after removing fractions "
        f"{fractions}: removal by the map costs {more} than random (drop {drop:+.{d}f})"
    )
    short = f"ROAR drop {drop:+.{d}f} beyond random" + ("" if passed else " (not larger)")
    values = {"roar_accuracy": acc, "roar_accuracy_random": rnd, "roar_drop": drop}
    return _Check(values, passed, reading, short)


def _cost(manifest: pd.DataFrame | None, method: str, ctx: _Context) -> _Check:
    if manifest is None:
        return _not_measured("cost", "cost", ctx, method)
    seconds = pd.to_numeric(manifest.get("seconds", pd.Series(dtype=float)), errors="coerce")
    seconds = seconds[np.isfinite(seconds)]
    if seconds.empty:
        reading = "not recorded: its maps.tsv has no seconds (maps made elsewhere?)"
        return _Check({}, None, reading, "cost not recorded")
    mean = float(seconds.mean())
    reading = f"{mean:.3g} s per map (mean of {len(seconds)} maps)"
    return _Check({"seconds_per_map": mean}, None, reading, f"{mean:.3g} s/map")


def _verdict(checks: Sequence[_Check]) -> str:
    measured = [bool(c.passed) for c in checks if c.passed is not None]
    if not measured:
        return "incomplete"
    return "passes" if all(measured) else "fails"


def _row(method: str, tables: dict, manifest: pd.DataFrame | None, ctx: _Context) -> dict:
    checks = {
        "localisation": _localisation(tables["localisation"], method, ctx),
        "deletion": _faithfulness(tables["faithfulness"], method, "deletion", ctx),
        "insertion": _faithfulness(tables["faithfulness"], method, "insertion", ctx),
        "sanity": _sanity(tables["sanity"], method, ctx),
        "roar": _roar(tables["roar"], method, ctx),
    }
    cost = _cost(manifest, method, ctx)
    row: dict = {"method": method, "seconds_per_map": np.nan}
    for name, check in checks.items():
        row.update(_nan(name) | check.values)
        row[f"{name}_passed"] = None if check.passed is None else bool(check.passed)
        row[f"{name}_reading"] = check.reading
    row.update(cost.values, cost_reading=cost.reading, verdict=_verdict(list(checks.values())))
    row["reading"] = "; ".join(c.short for c in [*checks.values(), cost])
    return row


def _checked(name: str, table: pd.DataFrame | None) -> pd.DataFrame | None:
    if table is None:
        return None
    missing = [c for c in _REQUIRED[name] if c not in table]
    if missing:
        raise ConfigError(
            f"{name} table lacks columns {missing}: expected {list(_REQUIRED[name])} "
            f"(as `{COMMANDS[name]}` writes them); found {list(table.columns)}."
        )
    return table


def _methods(methods: Sequence[str], tables: dict, manifests: Mapping) -> list[str]:
    """``methods``, then every other method named in a table (not the random control)."""
    found = list(methods)
    for name, table in tables.items():
        if table is not None:
            names = table["method"].astype(str)
            found += [m for m in names if not (name == "faithfulness" and m == "random")]
    return list(dict.fromkeys([*found, *manifests]))


def trust_table(
    methods: Sequence[str] = (),
    *,
    localisation: pd.DataFrame | None = None,
    faithfulness: pd.DataFrame | None = None,
    sanity: pd.DataFrame | None = None,
    roar: pd.DataFrame | None = None,
    manifests: Mapping[str, pd.DataFrame] | None = None,
    ground_truth: bool = True,
    combined_map: str | None = "conjoined",
    localisation_bound: float = LOCALISATION_BOUND,
    margin: float = FAITHFULNESS_MARGIN,
    roar_margin: float = ROAR_MARGIN,
    run: str = "RUN",
    commands: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """One row per method: what each check found, its reading, and a verdict.

    Parameters
    ----------
    methods : sequence of str
        Methods listed first (usually those with maps); every other method named in a
        table (except the faithfulness control ``random``) or in ``manifests`` follows.
    localisation, faithfulness, sanity, roar : pandas.DataFrame, optional
        The run's ``localisation``, ``faithfulness``, ``sanity_summary`` and ``roar``
        tables (see the module docstring); ``None``: not measured.
    manifests : mapping of str to pandas.DataFrame, optional
        Each method's ``maps.tsv`` (for the seconds per map).
    ground_truth : bool
        Whether the cohort has a planted truth mask; without one and without a
        localisation table, localisation reads "no ground truth" (not a missing step).
    combined_map : str, optional
        The localisation row used (``conjoined``; ``None`` or absent: the first
        class-mean row).
    localisation_bound, margin, roar_margin : float
        Bounds of the localisation, deletion / insertion and ROAR rules.
    run : str
        How the run folder is written in the commands of "not measured" readings
        (:func:`brainmaps.steps.trust.trust_run` gives the run folder's path).
    commands : mapping, optional
        Overrides of :data:`COMMANDS` (source -> the command that writes its table;
        ``None``: no command does yet, and the reading says so).

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`: per check its values, ``<check>_passed`` (True, False or
        None when not measured) and ``<check>_reading``; ``seconds_per_map`` and
        ``cost_reading``; ``verdict`` (``passes``, ``fails`` or ``incomplete``) and
        ``reading`` (one sentence listing every check).

    Raises
    ------
    ConfigError
        If a table lacks the columns its check reads.
    """
    tables = {
        "localisation": _checked("localisation", localisation),
        "faithfulness": _checked("faithfulness", faithfulness),
        "sanity": _checked("sanity", sanity),
        "roar": _checked("roar", roar),
    }
    manifests = dict(manifests or {})
    ctx = _Context(
        run=str(run),
        commands={**COMMANDS, **(commands or {})},
        ground_truth=bool(ground_truth),
        combined_map=combined_map,
        localisation_bound=check_float("localisation_bound", localisation_bound, min=0, max=1),
        margin=check_float("margin", margin, min=0),
        roar_margin=check_float("roar_margin", roar_margin, min=0),
    )
    rows = [_row(m, tables, manifests.get(m), ctx) for m in _methods(methods, tables, manifests)]
    table = pd.DataFrame(rows, columns=COLUMNS)
    passed = [c for c in COLUMNS if c.endswith("_passed")]
    table[passed] = table[passed].astype(object)  # True, False or None in every column
    return table
