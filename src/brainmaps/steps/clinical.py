"""The ``clinical`` step: out-of-fold scores against clinical measures, covariates, subgroups.

Runs only on request (``brainmaps clinical RUN --measures mmse ...``): which columns of the
cohort are clinical is the user's to say. The table is
:func:`brainmaps.analysis.clinical.clinical_table` of each subject's out-of-fold linear
score (log-odds of the run's second class) with the cohort's columns.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainmaps.analysis.clinical import clinical_table, linear_score
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step
from brainmaps.utils import write_tsv

__all__ = ["STEP", "clinical_frame", "clinical_run"]


def clinical_frame(run_dir: str | os.PathLike | RunFolder) -> pd.DataFrame:
    """One row per scan: the cohort's columns, ``label`` and the out-of-fold ``score``.

    Raises
    ------
    ConfigError
        The run is not a binary classification run, or has no ``predictions.tsv`` yet.
    """
    run = open_run(run_dir)
    if not run.task.is_classification or len(run.classes) != 2:
        raise ConfigError(
            f"the clinical step needs a binary classification run (a score per subject); "
            f"run {run.path} is {run.task.name} with classes {list(run.classes) or 'none'}."
        )
    if not run.layout.predictions.is_file():
        raise ConfigError(
            f"run {run.path} has no {run.layout.PREDICTIONS}; finish 'brainmaps train' first."
        )
    keys = {"subject": str, "session": str}
    predictions = pd.read_csv(run.layout.predictions, sep="\t", dtype=keys, keep_default_na=False)
    cohort = pd.read_csv(run.layout.cohort, sep="\t", dtype=keys, keep_default_na=False)
    positive = run.classes[1]
    scores = predictions[["subject", "session", "fold"]].assign(
        score=linear_score(pd.to_numeric(predictions[f"p_{positive}"]))
    )
    frame = cohort.drop(columns=[c for c in ("fold",) if c in cohort]).merge(
        scores, on=["subject", "session"], how="inner"
    )
    return frame.replace({"": None})


def clinical_run(
    run_dir: str | os.PathLike | RunFolder,
    *,
    measures: Sequence[str] = (),
    covariates: Sequence[str] = (),
    subgroups: Sequence[str] = (),
    n_permutations: int = 10_000,
    seed: int = 0,
) -> Path:
    """Write ``analysis/clinical.tsv`` and record its options (``stages/clinical.yaml``).

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A binary classification run.
    measures, covariates, subgroups : sequence of str
        Columns of the run's ``cohort.tsv`` (see
        :func:`brainmaps.analysis.clinical.clinical_table`).
    n_permutations, seed : int
        Permutation tests of the subgroups.

    Returns
    -------
    pathlib.Path
    """
    run = open_run(run_dir)
    frame = clinical_frame(run)
    table = clinical_table(
        frame,
        label="label",
        measures=measures,
        covariates=covariates,
        subgroups=subgroups,
        n_permutations=n_permutations,
        seed=seed,
    )
    path = run.layout.analysis("clinical")
    write_tsv(table, path)
    record_stage(
        run,
        "clinical",
        measures=list(measures),
        covariates=list(covariates),
        subgroups=list(subgroups),
        n_permutations=n_permutations,
        seed=seed,
        score=f"log-odds of {run.classes[1]} (out-of-fold)",
    )
    return path


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    """``analyse_run`` never runs it: the clinical columns are the user's to name."""
    if not run.task.is_classification or len(run.classes) != 2:
        return "binary classification runs only"
    again = " again to update it" if run.layout.analysis("clinical").is_file() else ""
    return (
        f"the clinical columns are yours to name: run `brainmaps clinical {run.path} "
        f"--measures ... [--covariates ...] [--subgroups ...]`{again}"
    )


STEP = register_step(
    Step(
        name="clinical",
        order=58,
        command="brainmaps clinical",
        output=lambda run, options: run.layout.analysis("clinical"),
        compute=lambda run, methods, options: clinical_run(run, **options),
        skip=_skip,
        inputs=lambda run: [run.layout.predictions],
    )
)
