"""Cross-validation that leaves whole acquisition sites out (BrainImageNet's protocol).

Lu et al. validated their Alzheimer's classifier by training on some datasets and testing
on others, so that a test fold never shares a scanner, protocol or population with the
training folds. A split by subject does not do that: when the label is correlated with
the site (patients from one hospital, controls from another), a network can score well by
recognising the site. Here every row of a site falls in one test fold, folds are
stratified by label as far as the sites allow, and a split that puts one site in two
folds is refused (:class:`~brainmaps.exceptions.DataLeakageError`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from brainmaps.evaluation.splitters import _as_1d, _subject_strata
from brainmaps.exceptions import CohortError, ConfigError, DataLeakageError

__all__ = ["CV_SCHEMES", "check_site_leakage", "make_site_folds", "site_of_subjects"]

#: How the outer folds are made: by subject (stratified), by groups of sites, one site per
#: fold, or from a user's file.
CV_SCHEMES = ("stratified", "leave-sites-out", "leave-one-site-out", "file")


def site_of_subjects(subjects, sites) -> tuple[np.ndarray, np.ndarray]:
    """Unique subjects and the one site of each.

    Raises
    ------
    CohortError
        A row without a site, or a subject scanned at two sites (its scans could not be
        kept out of the training sites).
    """
    subjects = _as_1d("subjects", subjects).astype(str)
    sites = _as_1d("sites", sites, len(subjects)).astype(str)
    missing = sorted(set(subjects[(sites == "") | (sites == "nan")]))
    if missing:
        raise CohortError(
            f"{len(missing)} subject(s) have no site (e.g. {', '.join(missing[:5])}); "
            "leave-sites-out needs a 'site' column for every row of the cohort table or "
            "participants.tsv."
        )
    pairs = pd.DataFrame({"s": subjects, "site": sites}).drop_duplicates()
    twice = pairs[pairs.duplicated("s", keep=False)]
    if not twice.empty:
        shown = "; ".join(
            f"{s} at {', '.join(sorted(g['site']))}" for s, g in list(twice.groupby("s"))[:5]
        )
        raise CohortError(
            f"subject(s) scanned at more than one site ({shown}); a subject must belong to "
            "one site for leave-sites-out: give their sessions one site or drop some."
        )
    uniq = np.unique(subjects)
    return uniq, pairs.set_index("s").loc[uniq, "site"].to_numpy(dtype=str)


def make_site_folds(
    subjects,
    sites,
    labels,
    n_folds: int | None = None,
    seed: int = 42,
    *,
    task: str = "auto",
) -> np.ndarray:
    """Assign each row to a test fold so that every site is in exactly one fold.

    Parameters
    ----------
    subjects, sites, labels : array-like of shape (n_rows,)
        Subject, acquisition site and label of each row.
    n_folds : int, optional
        Number of folds (>= 2, at most the number of sites); sites are grouped into folds
        by :class:`sklearn.model_selection.StratifiedGroupKFold` (shuffled, seeded), which
        balances the label mix of the folds as far as whole sites allow. ``None``: one
        fold per site (leave-one-site-out), in the sites' sorted order.
    seed : int
        Seeds the grouping of sites.
    task : {"auto", "classification", "regression"}
        How to read ``labels`` (quantile bins for regression).

    Returns
    -------
    numpy.ndarray of int, shape (n_rows,)

    Raises
    ------
    CohortError
        Fewer than two sites, fewer sites than folds, a row without a site, or a subject
        at two sites.
    ConfigError
        ``n_folds`` is not an integer >= 2.
    """
    subjects = _as_1d("subjects", subjects).astype(str)
    uniq, subject_site = site_of_subjects(subjects, sites)
    site_names, site_index = np.unique(subject_site, return_inverse=True)
    n_sites = len(site_names)
    if n_sites < 2:
        raise CohortError(
            f"leave-sites-out needs at least 2 sites; the cohort has {n_sites} "
            f"({', '.join(site_names)}). Use --cv stratified."
        )
    if n_folds is None:
        subject_fold = site_index
    else:
        if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
            raise ConfigError(f"n_folds must be an integer >= 2, got {n_folds!r}; set --folds.")
        if n_folds > n_sites:
            raise CohortError(
                f"cannot make {n_folds} leave-sites-out folds from {n_sites} sites "
                f"({', '.join(site_names)}); use --folds {n_sites} or fewer, or "
                "--cv leave-one-site-out."
            )
        _, _, strata = _subject_strata(subjects, labels, task, lambda n: n // int(n_folds))
        splitter = StratifiedGroupKFold(n_splits=int(n_folds), shuffle=True, random_state=seed)
        subject_fold = np.empty(len(uniq), dtype=int)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            for k, (_, test) in enumerate(splitter.split(uniq, strata, site_index)):
                subject_fold[test] = k
    row_subject = np.searchsorted(uniq, subjects)
    folds = subject_fold[row_subject]
    check_site_leakage(sites, folds)
    return folds


def check_site_leakage(sites, folds) -> None:
    """Check that no site has rows in two folds.

    Raises
    ------
    DataLeakageError
        Naming each site found in more than one fold, with its folds.
    """
    sites = _as_1d("sites", sites).astype(str)
    folds = _as_1d("folds", folds, len(sites))
    per_site = pd.DataFrame({"site": sites, "f": folds}).groupby("site")["f"].unique()
    leaking = per_site[per_site.map(len) > 1]
    if leaking.empty:
        return
    shown = "; ".join(f"{s} in folds {sorted(v.tolist())}" for s, v in leaking.items())
    raise DataLeakageError(
        f"{len(leaking)} site(s) appear in more than one fold ({shown}): a model would be "
        "tested on a site it was trained on. Give every row of a site the same fold."
    )
