"""The ``anatomy`` step: each subject's relevance in atlas regions against their volumes.

Runs on request (``brainmaps anatomy RUN --atlas ATLAS [--volumes TABLE --pair ...]``):
which atlas holds the regions of interest and which table their volumes is the user's to
say. Writes ``analysis/anatomy_<atlas>.tsv`` (the correlations of
:func:`brainmaps.analysis.anatomy.anatomy_table`, one row per method, group and pair) and
``analysis/anatomy_<atlas>_subjects.tsv`` (the values per subject, for plots and checks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.analysis import anatomy
from brainmaps.analysis.builtin_atlases import get_atlas
from brainmaps.analysis.maps import list_map_methods, run_brain_mask
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step
from brainmaps.tasks import DEFAULT_AGE_GROUPS, check_age_groups
from brainmaps.utils import write_tsv

__all__ = ["STEP", "anatomy_run", "read_volumes", "run_volumes"]


def run_volumes(run: RunFolder, atlas) -> pd.DataFrame:
    """Region volumes of the run's own preprocessed volumes (``<region>_volume``, mm³).

    :func:`brainmaps.baselines.morphometry.run_morphometry` in intensity mode: the voxels
    above each scan's Otsu threshold inside each region, one row per run scan, in the
    run's order.
    """
    from brainmaps.baselines.morphometry import run_morphometry

    return run_morphometry(run.path, atlas.img, atlas.labels[["index", "name"]], progress=False)


def read_volumes(path: str | os.PathLike, subjects, sessions) -> pd.DataFrame:
    """The numeric columns of a volume table, one row per subject (see
    :func:`brainmaps.baselines.tables.load_features`)."""
    from brainmaps.baselines.tables import load_features

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"volume table {path} does not exist; pass --volumes TABLE (TSV/CSV).")
    return load_features(path, list(subjects), list(sessions))


def _aligned(run: RunFolder, manifest: pd.DataFrame, volumes: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``volumes`` (one per run scan, run order) for the scans of ``manifest``."""
    keys = list(zip(run.table["subject"].astype(str), run.table["session"].fillna("").astype(str),
                    strict=True))  # fmt: skip
    position = {k: i for i, k in enumerate(keys)}
    wanted = zip(manifest["subject"].astype(str), manifest["session"].fillna("").astype(str),
                 strict=True)  # fmt: skip
    rows = [position.get(k, -1) for k in wanted]
    if min(rows, default=0) < 0:
        raise ConfigError(f"maps of scans that are not in run {run.path}; explain the run again.")
    return volumes.iloc[rows].reset_index(drop=True)


def _manifest(run: RunFolder, method: str) -> pd.DataFrame:
    path = run.layout.maps_manifest(method)
    if not path.is_file():
        raise ConfigError(
            f"no maps of method {method!r} in {run.layout.maps_dir(method)}; run "
            f"'brainmaps explain {run.path} --methods {method}' first."
        )
    manifest = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})
    manifest["session"] = manifest["session"].fillna("")
    return manifest


def _groups(run: RunFolder, manifest: pd.DataFrame, age_groups) -> dict[str, np.ndarray]:
    from brainmaps.attribution._group_maps import regression_gap

    groups = run.task.map_groups(
        run.task.label_targets(manifest["label"]),
        gap=regression_gap(run, manifest),
        age_groups=age_groups,
    )
    return {"all": np.ones(len(manifest), bool), **groups}


def anatomy_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    atlas=None,
    labels=None,
    volumes: str | os.PathLike | None = None,
    pairs: Sequence[str] | str | None = None,
    statistic: str = "fraction",
    values: str = "absolute",
    age_groups: Sequence[float] | str | None = DEFAULT_AGE_GROUPS,
) -> Path:
    """Correlate each subject's relevance in atlas regions with the regions' volumes.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A run with subject maps (``brainmaps explain``).
    methods : sequence of str, optional
        Map methods (default: every method with maps).
    atlas, labels
        The atlas of the regions (built-in name or label image + table, see
        :func:`brainmaps.analysis.builtin_atlases.get_atlas`); in the maps' space.
    volumes : str or os.PathLike, optional
        A table of region volumes with a subject column (DLMUSE, FreeSurfer,
        ``brainmaps morphometry``). Default: measured on the run's preprocessed volumes
        over the same atlas (:func:`run_volumes`).
    pairs : str or sequence of str, optional
        ``NAME=REGION[+...]:COLUMN[+...]`` (:func:`brainmaps.analysis.anatomy.parse_pairs`).
        Default: every region with a ``<region>_volume`` column, and ``ventricles`` (every
        region and column naming a ventricle) first when there are such.
    statistic, values : str
        See :func:`brainmaps.analysis.anatomy.region_relevance`.
    age_groups : (float, float), str or None
        Regression runs: the young/old cutoffs of the groups (as ``explain --groups``);
        correlations are given for all subjects and for each group.

    Returns
    -------
    pathlib.Path
        ``analysis/anatomy_<atlas>.tsv``.

    Raises
    ------
    ConfigError
        No maps, a volume table without the run's subjects, a pair naming a region or
        column that does not exist, or no pair at all.
    """
    run = open_run(run_dir)
    methods = list(methods) if methods else list_map_methods(run)
    if not methods:
        raise ConfigError(
            f"run {run.path} has no maps; run 'brainmaps explain {run.path} --methods lrp' first."
        )
    atlas = get_atlas(atlas, labels)
    age_groups = check_age_groups(age_groups)
    parsed = anatomy.parse_pairs(pairs)
    measured = run_volumes(run, atlas) if volumes is None else None
    mask = np.asarray(run_brain_mask(run).dataobj) > 0
    tables, subjects = [], []
    for method in methods:
        manifest = _manifest(run, method)
        if volumes is None:
            vol = _aligned(run, manifest, measured)
        else:
            vol = read_volumes(volumes, manifest["subject"], manifest["session"])
        chosen = parsed or _default_pairs(atlas, vol)
        files = [run.layout.maps_dir(method) / f for f in manifest["file"]]
        relevance = anatomy.region_relevance(
            files, atlas, mask=mask, statistic=statistic, values=values
        )
        y = pd.to_numeric(pd.Series(run.task.label_targets(manifest["label"])), errors="coerce")
        covariate = None if run.task.is_classification else y.to_numpy(float)
        table, per_subject = anatomy.anatomy_table(
            relevance,
            vol,
            chosen,
            groups=_groups(run, manifest, age_groups),
            covariate=covariate,
            method=method,
        )
        tables.append(table)
        ids = manifest[["subject", "session", "label"]].reset_index(drop=True)
        subjects.append(pd.concat([ids.assign(method=method), per_subject], axis=1))
    path = run.layout.analysis(f"anatomy_{atlas.name}")
    write_tsv(pd.concat(subjects, ignore_index=True), path.with_name(f"{path.stem}_subjects.tsv"))
    write_tsv(pd.concat(tables, ignore_index=True), path)
    record_stage(
        run,
        f"anatomy_{atlas.name}",
        methods=methods,
        atlas=atlas.name,
        volumes=str(volumes) if volumes is not None else "measured on the run's volumes",
        pairs=[f"{p.name}={'+'.join(p.regions)}:{'+'.join(p.volumes)}" for p in parsed],
        statistic=statistic,
        values=values,
        age_groups=list(age_groups) if age_groups else None,
    )
    return path


def _default_pairs(atlas, volumes: pd.DataFrame) -> list[anatomy.Pair]:
    pairs = anatomy.volume_pairs(atlas, volumes.columns)
    ventricles = anatomy.ventricle_pair(atlas, volumes.columns)
    if ventricles is not None and len(ventricles.regions) > 1:
        pairs.insert(0, ventricles)
    if not pairs:
        raise ConfigError(
            f"the volume table has no <region>_volume column for the regions of atlas "
            f"{atlas.name!r} (columns include {list(volumes.columns[:6])}); pass "
            "--pair NAME=REGION[+REGION]:COLUMN[+COLUMN], e.g. "
            "ventricles=Left_Lateral_Ventricle+Right_Lateral_Ventricle:MUSE_51+MUSE_52."
        )
    return pairs


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    """``analyse_run`` never runs it: atlas, volumes and pairs are the user's to name."""
    return (
        f"the regions and volumes are yours to name: run `brainmaps anatomy {run.path} "
        "--atlas ATLAS [--volumes TABLE --pair NAME=REGIONS:COLUMNS]`"
    )


STEP = register_step(
    Step(
        name="anatomy",
        order=59,
        command="brainmaps anatomy",
        output=lambda run, options: run.layout.analysis(
            f"anatomy_{get_atlas(options.get('atlas')).name}"
        ),
        compute=lambda run, methods, options: anatomy_run(run, methods, **options),
        skip=_skip,
    )
)
