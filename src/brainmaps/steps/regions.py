"""The ``regions`` step: atlas regions ranked by each group map (Kan et al. Table 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from brainmaps.analysis.builtin_atlases import get_atlas
from brainmaps.analysis.maps import list_map_methods
from brainmaps.analysis.regions import rank_run_regions
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step

__all__ = ["STEP", "regions"]


def _atlas(atlas, labels=None):
    if atlas is None or isinstance(atlas, str) or hasattr(atlas, "__fspath__"):
        return get_atlas(atlas, labels)
    return atlas


def regions(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    atlas=None,
    labels=None,
    **options,
) -> Path:
    """Write ``analysis/regions_<atlas>.tsv`` (see
    :func:`brainmaps.analysis.regions.rank_run_regions`) and record its options."""
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    atlas = _atlas(atlas, labels)
    path = rank_run_regions(run, atlas=atlas, methods=methods, **options)
    record_stage(run, f"regions_{atlas.name}", methods=methods, atlas=atlas.name, **options)
    return path


STEP = register_step(
    Step(
        name="regions",
        order=30,
        command="brainmaps regions",
        output=lambda run, options: run.layout.analysis(f"regions_{_atlas(options['atlas']).name}"),
        compute=lambda run, methods, options: regions(run, methods, atlas=options["atlas"]),
    )
)
