"""The ``localise`` step: ROC AUC, relevance mass and pointing game against planted truth."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from brainmaps.analysis.localisation import localisation_run
from brainmaps.analysis.maps import ground_truth_mask, list_map_methods
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, needs_maps, record_stage, register_step

__all__ = ["STEP", "localise"]


def localise(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    truth_img=None,
    absolute: bool = True,
    tolerance_mm: float = 0.0,
) -> Path:
    """Write ``analysis/localisation.tsv`` (see
    :func:`brainmaps.analysis.localisation.localisation_run`) and record its options."""
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    path = localisation_run(
        run, methods, truth_img=truth_img, absolute=absolute, tolerance_mm=tolerance_mm
    )
    truth = None if truth_img is None else str(truth_img)
    record_stage(
        run, "localise", methods=methods, truth_img=truth, absolute=absolute,
        tolerance_mm=tolerance_mm,
    )  # fmt: skip
    return path


def _skip(run, methods, options) -> str | None:
    if ground_truth_mask(run) is None:
        return needs_maps(run, methods, options) or "no ground-truth mask (not a synthetic cohort)"
    return needs_maps(run, methods, options)


STEP = register_step(
    Step(
        name="localise",
        order=20,
        command="brainmaps localise",
        output=lambda run, options: run.layout.analysis("localisation"),
        compute=lambda run, methods, options: localise(run, methods),
        skip=_skip,
    )
)
