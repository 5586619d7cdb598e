"""``brainmaps trust RUN``: one row per method gathering what the run's checks found."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.trust import LOCALISATION_BOUND
from brainmaps.steps.trust import trust_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "trust",
        help="per method, what localisation, faithfulness, sanity and ROAR found (a verdict)",
        description="Gather, for every attribution method, what the run's analyses found: "
        f"localisation AUC against the planted mask (passes above {LOCALISATION_BOUND:g}, "
        "chance 0.5), deletion and insertion areas against a random ranking, the "
        "model-randomisation sanity check, the ROAR accuracy drop against random removal "
        "(when analysis/roar.tsv exists) and the seconds per map, each with a one-line "
        "reading, and a verdict (passes, fails, incomplete). Reads only the tables already "
        "in the run folder (run the analyses first, e.g. 'brainmaps report'); checks whose "
        "table is missing are 'not measured'. Writes RUN/analysis/trust.tsv.",
    )
    p.add_argument("run_dir", help="run folder with maps and analysis tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps trust``."""
    path = trust_run(args.run_dir)
    table = pd.read_csv(path, sep="\t", dtype={"method": str})
    for row in table.itertuples(index=False):
        print(f"{row.method}: {row.verdict.upper()} - {row.reading}")
    print(f"trust table written to {path}")
    return 0
