"""``brainmaps clinical RUN --measures mmse``: the out-of-fold score against clinical data."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.exceptions import ConfigError
from brainmaps.steps.clinical import clinical_run
from brainmaps.validation import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "clinical",
        help="relate the out-of-fold score to clinical measures, covariates and subgroups",
        description="Each subject's out-of-fold linear score (log-odds of the run's second "
        "class) against columns of the cohort: Spearman correlation with each measure "
        "(overall and within each class), an OLS fit score ~ class + covariates, and "
        "permutation tests (with Cohen's d) between the levels of each subgroup column. "
        "Writes RUN/analysis/clinical.tsv.",
    )
    p.add_argument("run_dir", help="a binary classification run ('brainmaps train')")
    p.add_argument("--measures", help="numeric columns to correlate, e.g. mmse,cdr")
    p.add_argument("--covariates", help="columns held fixed in score ~ class + ..., e.g. age,sex")
    p.add_argument("--subgroups", help="columns whose levels are compared, e.g. site,progression")
    p.add_argument(
        "--permutations", type=int, default=10_000, help="permutations per comparison (10000)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations (0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps clinical``."""
    measures = parse_list(args.measures, "--measures", example="mmse")
    covariates = parse_list(args.covariates, "--covariates", example="age,sex")
    subgroups = parse_list(args.subgroups, "--subgroups", example="site")
    if not (measures or covariates or subgroups):
        raise ConfigError(
            "give at least one of --measures, --covariates or --subgroups (columns of the "
            "run's cohort.tsv), e.g. --measures mmse --covariates age,sex --subgroups site."
        )
    path = clinical_run(
        args.run_dir,
        measures=measures,
        covariates=covariates,
        subgroups=subgroups,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"clinical analysis written to {path}")
    return 0
