"""Run every analysis of a run folder whose table is missing or older than its inputs.

``brainmaps report`` and the demo call :func:`analyse_run` before rendering, so a report
always shows current tables; each step can also be run alone with its own command
(``compare``, ``localise``, ``regions``, ``faithfulness``, ``sanity``,
``masked-eval``, ``roar``, ``first-layer``, ``trust``). ``roar`` retrains models, so its
``skip`` always answers here with the command that runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from brainmaps.analysis.builtin_atlases import get_atlas
from brainmaps.analysis.maps import list_map_methods
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import open_run
from brainmaps.steps import get_step, list_steps

__all__ = ["STEPS", "analyse_run"]

#: Analysis steps in the order they run (the registry of :mod:`brainmaps.steps`).
STEPS = tuple(list_steps())


def _newest(paths: Sequence[Path]) -> float:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    return max(times, default=0.0)


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
    options = {
        "atlas": get_atlas(atlas, labels) if "regions" in steps else None,
        "faithfulness_subjects": faithfulness_subjects,
        "device": device,
        "progress": progress,
    }
    done: dict[str, str] = {}
    for name in steps:
        step = get_step(name)
        reason = step.skip(run, methods, options)
        out = step.output(run, options) if not reason else None
        if reason:
            done[name] = f"skipped: {reason}"
        elif not overwrite and out.is_file() and out.stat().st_mtime >= _newest(step.inputs(run)):
            done[name] = f"current {out}"
        else:
            done[name] = f"written {step.run(run, methods, options)}"
        if log:
            log(f"{name}: {done[name]}")
    return done
