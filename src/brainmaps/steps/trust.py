"""The ``trust`` step: one row per method gathering what the run's checks found.

Reads the tables the other steps wrote (``localisation``, ``faithfulness``,
``sanity_summary``, ``roar`` when present, and each method's ``maps.tsv``) and writes
``analysis/trust.tsv`` through :func:`brainmaps.analysis.trust.trust_table`, which holds
the checks, their bounds and the verdict rule. Nothing is evaluated, so the step is cheap;
it runs after every step whose table it reads (``order`` 90: a step writing ``roar.tsv``
must order below it) and its table is stale when any of them is newer. A source table
older than a method's ``maps.tsv`` was measured on earlier maps: that method's rows are
ignored ("not measured") until the step runs again. The commands that readings name
are written with the run folder's path. Until a step named
``roar`` is registered, a missing ROAR table reads "no ROAR step" instead of naming a
command.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainmaps.analysis.maps import ground_truth_mask, list_map_methods
from brainmaps.analysis.trust import (
    FAITHFULNESS_MARGIN,
    LOCALISATION_BOUND,
    ROAR_MARGIN,
    trust_table,
)
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import (
    Step,
    get_step,
    list_steps,
    map_manifests,
    record_stage,
    register_step,
)
from brainmaps.utils import write_tsv

__all__ = ["SOURCES", "STEP", "trust_run"]

#: ``trust_table`` argument -> the analysis table it reads (``RunLayout.analysis(name)``).
SOURCES = {
    "localisation": "localisation",
    "faithfulness": "faithfulness",
    "sanity": "sanity_summary",
    "roar": "roar",
}


def _read(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    return pd.read_csv(path, sep="\t", dtype={"method": str, "subject": str, "session": str})


def _current(table: pd.DataFrame | None, path: Path, maps_time: dict[str, float]):
    """``table`` without the rows of methods whose maps are newer than it.

    A check measured on maps that were made again since (``explain --overwrite``) says
    nothing about the maps on disk: it reads "not measured" until its step runs again.
    """
    if table is None or "method" not in table:
        return table
    made = path.stat().st_mtime
    stale = [m for m, t in maps_time.items() if t > made]
    return table[~table["method"].isin(stale)].reset_index(drop=True)


def _inputs(run: RunFolder) -> list[Path]:
    """The tables the trust table is made from: it is stale when one is newer."""
    return [run.layout.analysis(name) for name in SOURCES.values()] + map_manifests(run)


def trust_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    localisation_bound: float = LOCALISATION_BOUND,
    margin: float = FAITHFULNESS_MARGIN,
    roar_margin: float = ROAR_MARGIN,
) -> Path:
    """Write ``analysis/trust.tsv``: the checks of every method, read from the run folder.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run folder (with maps and, usually, the other analyses' tables).
    methods : sequence of str, optional
        Methods listed first (default: every method with maps); every other method that
        a source table names gets a row too, so no checked method is left out.
    localisation_bound, margin, roar_margin : float
        Bounds of the rules (see :mod:`brainmaps.analysis.trust`).

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/trust.tsv`` (columns
        :data:`brainmaps.analysis.trust.COLUMNS`).
    """
    run = open_run(run_dir)
    layout = run.layout
    methods = list(dict.fromkeys(methods or list_map_methods(run)))
    manifests = {m: _read(layout.maps_manifest(m)) for m in layout.map_methods()}
    maps_time = {
        m: layout.maps_manifest(m).stat().st_mtime
        for m, table in manifests.items()
        if table is not None
    }
    tables = {
        key: _current(_read(layout.analysis(name)), layout.analysis(name), maps_time)
        for key, name in SOURCES.items()
    }
    truth = tables["localisation"] is not None or ground_truth_mask(run) is not None
    # the ROAR table is read when present; until a step writes it, no command is named
    roar = get_step("roar").command if "roar" in list_steps() else None
    table = trust_table(
        methods,
        **tables,
        manifests=manifests,
        ground_truth=truth,
        combined_map=run.task.combined_map(),
        localisation_bound=localisation_bound,
        margin=margin,
        roar_margin=roar_margin,
        run=shlex.quote(str(run.path)),
        commands={"roar": roar},
    )
    out = layout.analysis("trust")
    write_tsv(table, out)
    record_stage(
        run, "trust", methods=table["method"].tolist(),
        sources=[SOURCES[k] for k, t in tables.items() if t is not None],
        localisation_bound=localisation_bound, margin=margin, roar_margin=roar_margin,
    )  # fmt: skip
    return out


STEP = register_step(
    Step(
        name="trust",
        order=90,
        command="brainmaps trust",
        output=lambda run, options: run.layout.analysis("trust"),
        compute=lambda run, methods, options: trust_run(run, methods),
        inputs=_inputs,
    )
)
