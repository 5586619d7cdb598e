"""Run every analysis of a run folder whose table is missing or older than its inputs.

``brainmaps report`` and the demo call :func:`analyse_run` before rendering, so a report
always shows current tables; each step can also be run alone with its own command
(``compare``, ``localise``, ``regions``, ``faithfulness``, ``masked-eval``,
``first-layer``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from brainmaps.analysis.builtin_atlases import get_atlas
from brainmaps.analysis.localisation import localisation_run
from brainmaps.analysis.maps import ground_truth_mask, list_map_methods
from brainmaps.analysis.overlap import compare_run
from brainmaps.analysis.regions import rank_run_regions
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run

__all__ = ["STEPS", "analyse_run"]

#: Analysis steps in the order they run.
STEPS = ("compare", "localise", "regions", "faithfulness", "masked_eval", "first_layer")


def _newest(paths: Sequence[Path]) -> float:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times, default=0.0)


def _inputs(run: RunFolder, step: str) -> list[Path]:
    """Files whose change makes a step's table stale."""
    if step == "first_layer":
        return run.checkpoints()
    return [run.layout.maps_manifest(m) for m in list_map_methods(run)]


def _skip_reason(run: RunFolder, step: str, methods: list[str]) -> str | None:
    needs_maps = step not in ("first_layer",)
    if needs_maps and not methods:
        return f"no maps; run 'brainmaps explain {run.path}' first"
    if step == "compare" and len(methods) < 2:
        return "needs maps of at least two methods"
    if step == "localise" and ground_truth_mask(run) is None:
        return "no ground-truth mask (not a synthetic cohort)"
    if step in ("masked_eval", "first_layer") and not run.task.is_classification:
        return "classification runs only"
    return None


def analyse_run(
    run_dir: str | os.PathLike,
    steps: Sequence[str] | None = None,
    *,
    methods: Sequence[str] | None = None,
    atlas: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    faithfulness_subjects: int | None = 40,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> dict[str, str]:
    """Compute the analyses of a run whose tables are missing or stale.

    A table is stale when it is older than its inputs (the ``maps.tsv`` of any method
    for the map analyses, the fold models for the first-layer statistics).

    Parameters
    ----------
    run_dir : str or os.PathLike
        A trained run folder, usually with maps (``brainmaps explain``).
    steps : sequence of str, optional
        Any of :data:`STEPS` (default: all). Steps that do not apply (no ground truth,
        fewer than two methods, a regression run) are skipped with a reason.
    methods : sequence of str, optional
        Methods to analyse (default: every method with maps).
    atlas, labels : str or os.PathLike, optional
        Atlas for the region ranking: a built-in name (default ``"aal"``) or a label
        image with its table.
    faithfulness_subjects : int or None
        Subjects (in all, spread over the folds) whose maps get deletion / insertion
        curves, per method (``None``: every subject with a map).
    overwrite : bool
        Recompute every step even if its table is current.
    device : {"auto", "cpu", "cuda"}
    progress : bool
        Show progress bars.
    log : callable, optional
        Receives one line per step (default: ``print``).

    Returns
    -------
    dict of str to str
        For each step: ``"written <path>"``, ``"current <path>"`` or ``"skipped: <why>"``.
    """
    steps = list(STEPS if steps is None else steps)
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ConfigError(f"unknown analysis steps {unknown}; choose from {', '.join(STEPS)}.")
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    atlas_obj = get_atlas(atlas, labels) if "regions" in steps else None
    runners: dict[str, Callable[[], Path]] = {
        "compare": lambda: compare_run(run, methods),
        "localise": lambda: localisation_run(run, methods),
        "regions": lambda: rank_run_regions(run.path, atlas=atlas_obj, methods=methods),
        "faithfulness": lambda: _faithfulness(
            run, methods, faithfulness_subjects, device, progress
        ),
        "masked_eval": lambda: _masked_eval(run, methods, device, progress),
        "first_layer": lambda: _first_layer(run, device, progress),
    }
    tables = {  # the analysis table each step writes
        "compare": "overlap",
        "localise": "localisation",
        "regions": f"regions_{atlas_obj.name}" if atlas_obj else "",
        "faithfulness": "faithfulness",
        "masked_eval": "masked_eval",
        "first_layer": "first_layer",
    }
    done: dict[str, str] = {}
    for step in steps:
        reason = _skip_reason(run, step, methods)
        out = run.layout.analysis(tables[step])
        if reason:
            done[step] = f"skipped: {reason}"
        elif not overwrite and out.is_file() and out.stat().st_mtime >= _newest(_inputs(run, step)):
            done[step] = f"current {out}"
        else:
            done[step] = f"written {runners[step]()}"
        if log:
            log(f"{step}: {done[step]}")
    return done


def _faithfulness(run, methods, n_subjects, device, progress) -> Path:
    from brainmaps.training.reevaluate import faithfulness_run

    return faithfulness_run(
        run.path, methods, n_subjects=n_subjects, device=device, progress=progress
    )


def _masked_eval(run, methods, device, progress) -> Path:
    from brainmaps.training.masked_eval import masked_eval_run

    path = None
    for method in methods:
        path = masked_eval_run(run.path, method, device=device, progress=progress)
    return path


def _first_layer(run, device, progress) -> Path:
    from brainmaps.training.features import first_layer_run

    return first_layer_run(run.path, device=device, progress=progress)
