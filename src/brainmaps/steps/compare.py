"""The ``compare`` step: Dice, Jaccard and rank correlation between methods' group maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from brainmaps.analysis.maps import list_map_methods
from brainmaps.analysis.overlap import compare_run
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, needs_maps, record_stage, register_step

__all__ = ["STEP", "compare"]


def compare(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    threshold: str | float = "top10%",
    absolute: bool = True,
) -> Path:
    """Write ``analysis/overlap.tsv`` (see :func:`brainmaps.analysis.overlap.compare_run`)
    and record its options."""
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    path = compare_run(run, methods, threshold=threshold, absolute=absolute)
    record_stage(run, "compare", methods=methods, threshold=threshold, absolute=absolute)
    return path


def _skip(run, methods, options) -> str | None:
    if len(methods) < 2:
        return needs_maps(run, methods, options) or "needs maps of at least two methods"
    return None


STEP = register_step(
    Step(
        name="compare",
        order=10,
        command="brainmaps compare",
        output=lambda run, options: run.layout.analysis("overlap"),
        compute=lambda run, methods, options: compare(run, methods),
        skip=_skip,
    )
)
