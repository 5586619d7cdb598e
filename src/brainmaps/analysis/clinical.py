"""The network's score against clinical measures (BrainImageNet, Lu et al.).

Lu et al. correlated their Alzheimer's classifier's output with MMSE, compared it between
patients who progressed and those who stayed stable, and between sites. Here the score is
each subject's out-of-fold linear score (the log-odds of the positive class, before the
sigmoid), so no subject is scored by a model that trained on it:

* Spearman correlation of the score with each measure, over everyone and within each class
  (within a class the correlation is not driven by the class difference);
* an ordinary least-squares model ``score ~ class + covariates`` (statsmodels), so the class
  effect is read with age, sex, site... held fixed;
* subgroups compared by a two-sided permutation test of the difference of mean scores
  (seeded; 10,000 permutations by default), with Cohen's d.

NumPy, pandas, SciPy and statsmodels only (no torch).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
from scipy import stats

from brainmaps.exceptions import CohortError, ConfigError

__all__ = ["COLUMNS", "clinical_table", "cohens_d", "linear_score", "permutation_test"]

#: Columns of :func:`clinical_table`.
COLUMNS = [
    "analysis",
    "variable",
    "level",
    "within",
    "n",
    "estimate",
    "effect_size",
    "ci_low",
    "ci_high",
    "p_value",
    "p_fdr",
]
_EPS = 1e-7


def linear_score(p_positive) -> np.ndarray:
    """The log-odds ``log(p / (1 - p))`` of the positive class (``p`` clipped to 1e-7)."""
    p = np.clip(np.asarray(p_positive, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def cohens_d(a, b) -> float:
    """Cohen's d of ``a`` minus ``b`` with the pooled standard deviation (NaN if undefined)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((a.mean() - b.mean()) / np.sqrt(pooled)) if pooled > 0 else float("nan")


def permutation_test(a, b, n_permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided permutation p-value of the difference of means of ``a`` and ``b``.

    The labels of the pooled values are shuffled ``n_permutations`` times (seeded); the
    p-value is ``(1 + #{|diff*| >= |diff|}) / (1 + n_permutations)``, never 0.
    """
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, int):
        raise ConfigError(f"n_permutations must be an integer >= 1, got {n_permutations!r}.")
    if n_permutations < 1:
        raise ConfigError(f"n_permutations must be >= 1, got {n_permutations}.")
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    observed = abs(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 2000):  # bounded memory
        n = min(2000, n_permutations - start)
        shuffled = rng.permuted(np.tile(pooled, (n, 1)), axis=1)
        diff = shuffled[:, : len(a)].mean(axis=1) - shuffled[:, len(a) :].mean(axis=1)
        hits += int(np.sum(np.abs(diff) >= observed - 1e-12))
    return (1 + hits) / (1 + n_permutations)


def _check_columns(frame: pd.DataFrame, names, what: str) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise CohortError(
            f"{what} {missing} are not columns of the cohort; available: "
            f"{', '.join(c for c in frame.columns if not c.startswith('_'))}."
        )


def _spearman_rows(frame: pd.DataFrame, measures, label: str) -> list[dict]:
    rows = []
    for measure in measures:
        values = pd.to_numeric(frame[measure], errors="coerce")
        if values.notna().sum() < 3:
            raise CohortError(
                f"measure {measure!r} has {values.notna().sum()} numeric values; a correlation "
                "needs at least 3 subjects with a number."
            )
        groups = [("all", frame.index)] + [
            (str(c), g.index) for c, g in frame.groupby(label, sort=True)
        ]
        for within, index in groups:
            ok = values.loc[index].notna()
            x, y = frame.loc[index, "score"][ok], values.loc[index][ok]
            rho, p = (np.nan, np.nan)
            if len(x) >= 3 and x.nunique() > 1 and y.nunique() > 1:
                rho, p = stats.spearmanr(x, y)
            rows.append(
                {
                    "analysis": "spearman",
                    "variable": measure,
                    "level": "",
                    "within": within,
                    "n": int(ok.sum()),
                    "estimate": rho,
                    "p_value": p,
                }
            )
    return rows


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _ols_rows(frame: pd.DataFrame, label: str, covariates) -> list[dict]:
    import statsmodels.formula.api as smf

    data = frame[["score", label, *covariates]].copy()
    data.columns = ["score", "label", *(_safe(c) for c in covariates)]
    terms = ["C(label)"]
    for name in data.columns[2:]:
        numeric = pd.to_numeric(data[name], errors="coerce")
        if numeric.notna().all():
            data[name] = numeric
            terms.append(name)
        else:
            data[name] = data[name].astype(str)
            terms.append(f"C({name})")
    fit = smf.ols("score ~ " + " + ".join(terms), data=data).fit()
    ci = fit.conf_int()
    names = {_safe(c): c for c in covariates}
    rows = []
    for term in fit.params.index:
        variable, level = term, ""
        match = re.fullmatch(r"C\((\w+)\)\[T\.(.*)\]", term)
        if match:
            variable, level = match.group(1), match.group(2)
        variable = {"label": "class"}.get(variable, names.get(variable, variable))
        rows.append(
            {"analysis": "ols", "variable": variable, "level": level, "within": "all",
             "n": int(fit.nobs), "estimate": fit.params[term], "ci_low": ci.loc[term, 0],
             "ci_high": ci.loc[term, 1], "p_value": fit.pvalues[term]}
        )  # fmt: skip
    return rows


def _subgroup_rows(frame, subgroups, n_permutations: int, seed: int) -> list[dict]:
    rows = []
    for column in subgroups:
        values = frame[column].map(lambda v: "" if pd.isna(v) else str(v)).astype(object)
        levels = sorted(v for v in values.unique() if v != "")
        if len(levels) < 2:
            raise CohortError(
                f"subgroup column {column!r} has {len(levels)} level(s) ({levels}); a "
                "comparison needs at least 2."
            )
        for a, b in itertools.combinations(levels, 2):
            sa = frame.loc[values == a, "score"].to_numpy(float)
            sb = frame.loc[values == b, "score"].to_numpy(float)
            rows.append(
                {
                    "analysis": "permutation",
                    "variable": column,
                    "level": f"{a} vs {b}",
                    "within": "all",
                    "n": len(sa) + len(sb),
                    "estimate": sa.mean() - sb.mean(),
                    "effect_size": cohens_d(sa, sb),
                    "p_value": permutation_test(sa, sb, n_permutations, seed),
                }
            )
    return rows


def clinical_table(
    frame: pd.DataFrame,
    *,
    label: str = "label",
    measures=(),
    covariates=(),
    subgroups=(),
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Relate a per-subject ``score`` column to clinical measures, covariates and subgroups.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per subject with ``score``, the class column ``label`` and the named
        columns.
    label : str
        The class of each subject.
    measures : sequence of str
        Numeric columns correlated with the score (Spearman, overall and within classes).
    covariates : sequence of str
        Columns of ``score ~ class + covariates`` (numeric, or categorical when any value
        is not a number).
    subgroups : sequence of str
        Columns whose levels are compared pairwise (empty values are left out, e.g. a
        progression flag that only patients have).
    n_permutations, seed : int
        Permutation test settings.

    Returns
    -------
    pandas.DataFrame
        :data:`COLUMNS`: ``analysis`` is ``spearman`` (estimate rho), ``ols`` (estimate
        the coefficient, with its 95 % CI) or ``permutation`` (estimate the difference of
        mean scores, effect size Cohen's d); ``p_fdr`` adjusts the p-values within each
        measure's correlations and each subgroup column's comparisons (Benjamini-Hochberg).

    Raises
    ------
    CohortError
        A named column is missing, a measure has fewer than 3 numbers, or a subgroup
        column has fewer than 2 levels.
    ConfigError
        Nothing to do, or bad permutation settings.
    """
    measures, covariates, subgroups = list(measures), list(covariates), list(subgroups)
    if not (measures or covariates or subgroups):
        raise ConfigError("give measures, covariates or subgroups to relate the score to.")
    _check_columns(frame, ["score", label], "columns")
    _check_columns(frame, measures, "measures")
    _check_columns(frame, covariates, "covariates")
    _check_columns(frame, subgroups, "subgroups")
    rows = _spearman_rows(frame, measures, label)
    rows += _ols_rows(frame, label, covariates)
    rows += _subgroup_rows(frame, subgroups, n_permutations, seed)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    return _with_fdr(table)


def _with_fdr(table: pd.DataFrame) -> pd.DataFrame:
    """``p_fdr``: Benjamini-Hochberg q-values within each family of tests.

    A family is one measure's correlations (overall and per class) or one subgroup
    column's pairwise comparisons (e.g. the 15 pairs of 6 sites); OLS rows keep their own
    p-values (one model).
    """
    from brainmaps.evaluation.statistics import benjamini_hochberg

    table = table.copy()
    for (analysis, _), part in table.groupby(["analysis", "variable"], sort=False):
        p = part["p_value"].to_numpy(dtype=float)
        ok = np.isfinite(p)
        if analysis == "ols" or not ok.any():
            continue
        q = np.full(len(p), np.nan)
        q[ok] = benjamini_hochberg(p[ok])
        table.loc[part.index, "p_fdr"] = q
    return table
