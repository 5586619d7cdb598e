"""The ``explain`` step: attribution maps of a run, recorded with the options that made them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

import pandas as pd

from brainmaps.attribution.base import check_options, get_method, method_options
from brainmaps.attribution.cohort import explain_run
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.lock import run_lock
from brainmaps.run.stages import check_stage, write_stage
from brainmaps.tasks import DEFAULT_AGE_GROUPS, check_age_groups

__all__ = ["explain", "explain_options"]


def explain_options(
    method: str,
    *,
    target: str | int,
    layer: str | None,
    options: dict | None,
    subjects_per_fold: int | None,
    native_space: bool,
) -> dict:
    """The options that define one method's maps (what its stage record holds).

    Execution settings (device, batch size, progress) are left out: they do not change
    the maps.
    """
    opts = dict((options or {}).get(method, {}))
    if layer is not None and "layer" in method_options(method):
        opts.setdefault("layer", layer)
    default_layer = getattr(get_method(method), "recorded_layer", None)
    if default_layer is not None:  # a default that is not the model's own layer
        opts.setdefault("layer", default_layer)
    return {
        "method": method,
        "target": target,
        "options": dict(sorted(opts.items())),
        "subjects_per_fold": subjects_per_fold,
        "native_space": bool(native_space),
    }


def explain(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] = ("grad_cam", "guided_backprop"),
    *,
    target: str | int = "predicted",
    layer: str | None = None,
    options: dict[str, dict] | None = None,
    batch_size: int = 4,
    device: str = "auto",
    native_space: bool = False,
    subjects_per_fold: int | None = None,
    age_groups: Sequence[float] | str | None = DEFAULT_AGE_GROUPS,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Compute a run's out-of-fold attribution maps and record the options that made them.

    Takes the parameters of :func:`brainmaps.attribution.cohort.explain_run`, plus:

    Parameters
    ----------
    overwrite : bool
        When a method's maps exist but were made with other options (another target,
        layer, ``--set`` option or sample), delete them and compute them again. Without
        it such a call is refused with a message naming each changed option.
        ``age_groups`` is not among these options: only the group means depend on it,
        and they are recomputed on every call.

    Returns
    -------
    dict of str to pandas.DataFrame
        The ``maps.tsv`` table of each method.

    Raises
    ------
    StageOptionsError
        If maps exist with other options and ``overwrite`` is not set.
    RunLockedError
        If another process is writing the run folder.
    """
    run = open_run(run_dir)
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("no attribution method given; choose from list_methods().")
    for m in methods:  # before any map made with other options is deleted
        check_options(m, (options or {}).get(m, {}), run.grid.shape)
    age_groups = check_age_groups(age_groups)
    wanted = {
        m: explain_options(
            m,
            target=target,
            layer=layer,
            options=options,
            subjects_per_fold=subjects_per_fold,
            native_space=native_space,
        )
        for m in methods
    }
    layout = run.layout
    with run_lock(layout.lock, "brainmaps explain"):
        for m, opts in wanted.items():
            record = layout.stage_record(f"explain-{m}")
            reuse = check_stage(
                record,
                f"{layout.maps_dir(m)}",
                opts,
                overwrite=overwrite,
                hint=f"copy the run folder (cp -r {run.path} OTHER) and explain the copy to "
                "keep both",
            )
            if not reuse:
                shutil.rmtree(layout.maps_dir(m), ignore_errors=True)
                record.unlink(missing_ok=True)
        tables = explain_run(
            run,
            methods,
            target=target,
            layer=layer,
            options=options,
            batch_size=batch_size,
            device=device,
            native_space=native_space,
            subjects_per_fold=subjects_per_fold,
            age_groups=age_groups,
            progress=progress,
        )
        for m, opts in wanted.items():
            write_stage(layout.stage_record(f"explain-{m}"), f"explain-{m}", opts)
    return tables
