"""Take the raw T1 scans of a cohort to MNI space: ``brainmaps preprocess``.

:func:`preprocess_cohort` registers every scan of a BIDS folder or table (see
:mod:`brainmaps.data.registration`) and writes a BIDS-like dataset that
``brainmaps train OUT --target ...`` reads directly::

    OUT/dataset_description.json     settings (a re-run with other settings is refused)
    OUT/participants.tsv             the source's participant columns + qc_correlation, qc_flagged
    OUT/sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>]_space-MNI152NLin2009aSym_T1w.nii.gz
    OUT/sub-<id>/[ses-<s>/]xfm/sub-<id>[_ses-<s>]_from-T1w_to-MNI_affine.tfm
    OUT/qc.tsv                       subject, session, status, error, correlation, flagged, ...
    OUT/qc_mosaic.png                one axial slice per scan with the template's brain contour
    OUT/excluded/...                 flagged scans, moved here with exclude_flagged=True

Images are in MNI space on the output grid (2 mm by default), N4-corrected, multiplied by
the MNI brain mask and divided by their 99th percentile inside it. Resampling to the
model grid and z-scoring stay with the training cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from joblib import Parallel, cpu_count, delayed
from tqdm.auto import tqdm

from brainmaps.data.cohort import _SITE_COLS, _from_bids, _from_table
from brainmaps.data.io import save_img
from brainmaps.data.preprocess import MNI_BOX_SIZE, Grid, mni_brain_mask, mni_grid, parse_grid
from brainmaps.data.qc import cohort_mean, correlations, flag_outliers, plot_qc_mosaic
from brainmaps.data.registration import (
    TEMPLATE_SPACE,
    RegistrationConfig,
    register_img,
    template_on_grid,
)
from brainmaps.data.tables import TABLE_SUFFIXES
from brainmaps.data.transforms import write_transform
from brainmaps.exceptions import (
    BrainmapsError,
    BrainmapsWarning,
    CohortError,
    ConfigError,
    ImageError,
)
from brainmaps.utils import atomic_path, atomic_write_text

__all__ = ["QC_COLUMNS", "list_scans", "output_grid", "output_paths", "preprocess_cohort"]

#: Columns of ``qc.tsv``.
QC_COLUMNS = (
    *("subject", "session", "status", "error"),
    *("correlation", "flagged", "seconds", "template_correlation"),
)
_DESCRIPTION = "dataset_description.json"
_EXCLUDED = "excluded"
_BAD_ID = re.compile(r"[\s/\\]|^\.")


def output_paths(out: str | os.PathLike, subject: str, session: str = "") -> tuple[Path, Path]:
    """Return where :func:`preprocess_cohort` writes a scan's image and transform.

    Parameters
    ----------
    out : path-like
        The output folder.
    subject, session : str
        Subject and session labels (without ``sub-`` / ``ses-``; ``session=''`` for none).

    Returns
    -------
    tuple of pathlib.Path
        ``(image, transform)``; give the transform to
        :func:`~brainmaps.data.transforms.apply_transform`.
    """
    stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    folder = Path(out) / f"sub-{subject}" / (f"ses-{session}" if session else "")
    return (
        folder / "anat" / f"{stem}_space-{TEMPLATE_SPACE}_T1w.nii.gz",
        folder / "xfm" / f"{stem}_from-T1w_to-MNI_affine.tfm",
    )


def output_grid(grid: str | tuple | list | Grid = "2mm") -> Grid:
    """Parse the output grid: ``"2mm"`` (voxel size), ``"91x109x91"`` (shape) or a Grid.

    Grids tile the MNI152 box (:func:`~brainmaps.data.preprocess.mni_grid`); ``"2mm"`` is
    ``91x109x91`` and ``"1mm"`` ``182x218x182``.
    """
    if isinstance(grid, Grid):
        return grid
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*mm\s*", grid) if isinstance(grid, str) else None
    if match is None:
        try:
            return mni_grid(parse_grid(grid))
        except ConfigError as exc:
            raise ConfigError(
                f"grid={grid!r} is neither a voxel size such as '2mm' nor a shape: {exc}"
            ) from None
    voxel = float(match.group(1))
    if not 0.5 <= voxel <= 10:
        raise ConfigError(f"grid={grid!r}: the voxel size must be 0.5-10 mm, e.g. '2mm'.")
    return mni_grid(tuple(max(1, round(size / voxel)) for size in MNI_BOX_SIZE))


def list_scans(
    source: str | os.PathLike,
    *,
    suffix: str = "T1w",
    subject_col: str | None = None,
    path_col: str | None = None,
) -> pd.DataFrame:
    """List the scans of a BIDS folder or table, without needing a label column.

    Uses the discovery of :func:`~brainmaps.data.cohort.load_cohort`; BIDS participants
    without an image (and images without a participant) are dropped with a warning. A
    ``sub-`` prefix of subject labels in a table is dropped (as BIDS names are read).

    Returns
    -------
    pandas.DataFrame
        ``subject, session, path`` then the source's other participant columns (site
        included, under its own name).
    """
    source = Path(os.path.abspath(os.path.expanduser(source)))
    notes: list[str] = []
    if source.is_dir():
        frame, consumed = _from_bids(source, suffix, subject_col, notes, True)
    elif source.is_file() and source.suffix.lower() in TABLE_SUFFIXES:
        frame, consumed = _from_table(source, subject_col, path_col)
    else:
        raise CohortError(
            f"source {source} is neither a BIDS folder nor a .tsv/.csv/.txt table; give the "
            "folder holding participants.tsv or a table of subjects and image paths."
        )
    for note in notes:
        warnings.warn(note, BrainmapsWarning, stacklevel=2)
    table = pd.DataFrame({k: frame[f"_{k}"].astype(str) for k in ("subject", "session", "path")})
    table["subject"] = table["subject"].str.removeprefix("sub-")  # tables may hold "sub-01"
    dropped = {c for c in consumed if c and c.lower() not in _SITE_COLS}
    for column in frame.columns:
        if not column.startswith("_") and column not in dropped:
            name = f"{column}_orig" if column in table.columns else column
            table[name] = frame[column].to_numpy()
    bad = [s for s in table["subject"].unique() if _BAD_ID.search(s)]
    if bad:
        raise CohortError(
            f"subject label(s) {bad[:5]} of {source} cannot name folders (whitespace, slashes "
            "or a leading dot); rename them."
        )
    if table.duplicated(["subject", "session"]).any():
        raise CohortError(f"{source} lists a subject/session twice; remove the duplicates.")
    return table.reset_index(drop=True)


@contextlib.contextmanager
def _sitk_threads(n: int):
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(n)))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _register_scan(index, path, image_path, transform_path, grid, config, threads):
    """Register one scan and write it; return ``(index, (error, seconds, r_template))``."""
    start = time.perf_counter()
    try:
        with _sitk_threads(threads):
            result = register_img(path, grid=grid, config=config)
        write_transform(result.transform, transform_path)
        save_img(result.img, image_path)  # written last: its presence marks the scan done
    except (BrainmapsError, RuntimeError, OSError) as exc:
        return index, (" ".join(str(exc).split()), time.perf_counter() - start, np.nan)
    return index, ("", time.perf_counter() - start, result.template_correlation)


def _settings(source, suffix: str, grid: Grid, config: RegistrationConfig) -> dict:
    return {
        "source": str(Path(os.path.abspath(os.path.expanduser(source)))),
        "suffix": suffix,
        "template": TEMPLATE_SPACE,
        "grid": grid.to_dict(),
        "registration": config.to_dict(),
    }


def _prepare_out(out: Path, settings: dict) -> None:
    """Write ``dataset_description.json``; refuse a folder made with other settings."""
    description = out / _DESCRIPTION
    if description.is_file():
        previous = json.loads(description.read_text(encoding="utf-8")).get("brainmaps")
        if previous != settings:
            changed = sorted(k for k in settings if (previous or {}).get(k) != settings[k])
            raise ConfigError(
                f"out={out} holds a preprocess run with other settings ({', '.join(changed)} "
                "differ); pass another --out folder, or delete it to start again."
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"out={out} exists and is not a 'brainmaps preprocess' output (no {_DESCRIPTION}); "
            "pass a new or empty folder."
        )
    from brainmaps import __version__

    text = {
        "Name": f"{Path(settings['source']).name} registered to {TEMPLATE_SPACE}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainmaps preprocess", "Version": __version__}],
        "SourceDatasets": [{"URL": Path(settings["source"]).as_uri()}],
        "brainmaps": settings,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(description, json.dumps(text, indent=2) + "\n")


def _located(out: Path, subject: str, session: str) -> tuple[Path, Path] | None:
    """The scan's outputs where they are (main folder or excluded/), or None."""
    for root in (out, out / _EXCLUDED):
        image, transform = output_paths(root, subject, session)
        if image.is_file() and transform.is_file():
            return image, transform
    return None


def _n_workers(n_jobs) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"n_jobs must be a non-zero integer (-1 = all cores), got {n_jobs!r}.")
    return n_jobs if n_jobs > 0 else max(1, cpu_count() + 1 + n_jobs)


def _register_all(scans, out, grid, config, n_jobs, progress) -> dict[int, tuple]:
    """Register the scans without outputs; return ``{row: (error, seconds, r_template)}``."""
    todo = [i for i, row in scans.iterrows() if _located(out, row.subject, row.session) is None]
    if not todo:
        return {}
    workers = min(_n_workers(n_jobs), len(todo))
    threads = max(1, cpu_count() // workers)
    jobs = (
        delayed(_register_scan)(
            i,
            scans.at[i, "path"],
            *output_paths(out, *scans.loc[i, ["subject", "session"]]),
            grid,
            config,
            threads,
        )
        for i in todo
    )
    results = {}
    bar = tqdm(total=len(todo), desc="registering", unit="scan", disable=not progress)
    try:
        for i, result in Parallel(n_jobs=workers, return_as="generator_unordered")(jobs):
            results[i] = result
            bar.update()
    finally:
        bar.close()
    return results


def _read_previous(out: Path) -> dict[tuple[str, str], tuple[float, float]]:
    path = out / "qc.tsv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str})
    table["session"] = table["session"].fillna("")
    return {
        (r.subject, r.session): (float(r.seconds), float(r.template_correlation))
        for r in table.itertuples()
        if r.status == "ok"
    }


def _qc_table(scans, results, previous) -> pd.DataFrame:
    rows = []
    for i, scan in scans.iterrows():
        key = (scan.subject, scan.session)
        error, seconds, r_template = results.get(i, ("", *previous.get(key, (np.nan, np.nan))))
        status = "failed" if error else "ok"
        rows.append([*key, status, error, np.nan, False, seconds, r_template])
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))


def _move(paths: tuple[Path, Path], targets: tuple[Path, Path]) -> None:
    for path, target in zip(paths, targets, strict=True):
        if path != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            with contextlib.suppress(OSError):
                os.removedirs(path.parent)  # drop folders left empty


def _place_outputs(out: Path, qc: pd.DataFrame, exclude_flagged: bool) -> list[Path]:
    """Move flagged scans to/from ``excluded/``; return each ok scan's image path."""
    images = []
    for row in qc.loc[qc["status"] == "ok"].itertuples():
        root = out / _EXCLUDED if (exclude_flagged and row.flagged) else out
        target = output_paths(root, row.subject, row.session)
        _move(_located(out, row.subject, row.session), target)
        images.append(target[0])
    return images


def _participants(scans: pd.DataFrame, qc: pd.DataFrame, exclude_flagged: bool):
    """One row per subject with at least one included scan, plus qc columns."""
    keep = (qc["status"] == "ok") & ~(qc["flagged"] & exclude_flagged)
    included = qc.loc[keep].groupby("subject", sort=False)
    summary = pd.DataFrame(
        {"qc_correlation": included["correlation"].min(), "qc_flagged": included["flagged"].any()}
    )
    first = scans.drop_duplicates("subject").set_index("subject")
    first = first.loc[[s for s in first.index if s in summary.index]]
    table = pd.DataFrame({"participant_id": "sub-" + first.index.to_series()})
    extra = first.drop(columns=["session", "path", "participant_id"], errors="ignore")
    table = pd.concat([table, extra, summary.loc[first.index]], axis=1)
    return table.reset_index(drop=True)


def _warn_problems(qc: pd.DataFrame, out: Path, exclude_flagged: bool) -> None:
    for row in qc.loc[qc["status"] == "failed"].itertuples():
        warnings.warn(
            f"scan {_label(row)} failed and is left out (see {out / 'qc.tsv'}): {row.error}",
            BrainmapsWarning,
            stacklevel=3,
        )
    flagged = [_label(row) for row in qc.loc[qc["flagged"]].itertuples()]
    if flagged:
        fate = "left out"
        if not exclude_flagged:
            fate = "kept (exclude_flagged=True, CLI --exclude-flagged, leaves them out)"
        warnings.warn(
            f"QC flagged {len(flagged)} scan(s) (correlation with the cohort mean below mean - "
            f"2 SD): {', '.join(flagged[:10])}; check {out / 'qc_mosaic.png'}. They are {fate}.",
            BrainmapsWarning,
            stacklevel=3,
        )


def _label(row) -> str:
    return row.subject + (f"/ses-{row.session}" if row.session else "")


def _write_tables(out: Path, scans: pd.DataFrame, qc: pd.DataFrame, exclude: bool) -> None:
    with atomic_path(out / "qc.tsv") as tmp:
        qc.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    if (qc["status"] == "ok").any():
        with atomic_path(out / "participants.tsv") as tmp:
            table = _participants(scans, qc, exclude)
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _run_qc(qc: pd.DataFrame, images: list[Path], grid: Grid) -> None:
    """Fill the correlation, flagged and template_correlation columns of ok rows."""
    ok = (qc["status"] == "ok").to_numpy()
    mask = mni_brain_mask(grid)
    values = correlations(images, cohort_mean(images, mask), mask)
    qc.loc[ok, "correlation"] = values
    qc.loc[ok, "flagged"] = flag_outliers(values)
    missing = ok & qc["template_correlation"].isna().to_numpy()
    if missing.any():
        redo = [p for p, m in zip(images, missing[ok], strict=True) if m]
        qc.loc[missing, "template_correlation"] = correlations(redo, template_on_grid(grid), mask)


def preprocess_cohort(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    grid: str | tuple | Grid = "2mm",
    config: RegistrationConfig | None = None,
    n_jobs: int = 1,
    exclude_flagged: bool = False,
    suffix: str = "T1w",
    subject_col: str | None = None,
    path_col: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Register every scan of a cohort to MNI space and write a BIDS-like dataset.

    See the module docstring for the layout of ``out``. Scans whose outputs exist are
    skipped (an interrupted run resumes). A scan that fails is reported in ``qc.tsv`` and
    by a :class:`BrainmapsWarning`, and the cohort goes on. QC (as in Lu et al.,
    BrainImageNet): each image's Pearson correlation with the cohort mean inside the MNI
    brain mask; images below mean - 2 SD of these correlations are flagged (with 5 scans
    or fewer none can be).

    Parameters
    ----------
    source : path-like
        A BIDS folder (``participants.tsv`` + ``sub-*/[ses-*/]anat/*_T1w.nii.gz``) or a
        table with subject and image path columns (no label column needed).
    out : path-like
        Output folder (new, empty, or an earlier output of the same settings).
    grid : str, tuple or Grid
        Output grid over the MNI box: ``"2mm"`` (91 x 109 x 91, default), ``"1mm"``, a
        shape such as ``"91x109x91"``, or a Grid.
    config : RegistrationConfig, optional
        Registration settings.
    n_jobs : int
        Scans registered in parallel (joblib processes; -1: all cores). The CPU cores are
        shared out as SimpleITK threads.
    exclude_flagged : bool
        Leave flagged scans out of ``participants.tsv`` (their files move to
        ``out/excluded/``, so ``load_cohort(out, ...)`` does not find them).
    suffix, subject_col, path_col : str
        As for :func:`~brainmaps.data.cohort.load_cohort`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        The QC table (:data:`QC_COLUMNS`), also written to ``out/qc.tsv``.

    Raises
    ------
    ImageError
        If every scan fails.
    CohortError, ConfigError
        For an unreadable source, bad settings, or an ``out`` made with other settings.
    """
    config = config or RegistrationConfig()
    grid = output_grid(grid)
    _n_workers(n_jobs)
    out = Path(out)
    scans = list_scans(source, suffix=suffix, subject_col=subject_col, path_col=path_col)
    _prepare_out(out, _settings(source, suffix, grid, config))
    previous = _read_previous(out)
    qc = _qc_table(scans, _register_all(scans, out, grid, config, n_jobs, progress), previous)
    ok = qc["status"] == "ok"
    if not ok.any():
        _write_tables(out, scans, qc, exclude_flagged)
        raise ImageError(
            f"all {len(qc)} scan(s) of {source} failed (see {out / 'qc.tsv'}); first error: "
            f"{qc['error'].iloc[0]}"
        )
    _run_qc(qc, [_located(out, r.subject, r.session)[0] for r in qc.loc[ok].itertuples()], grid)
    images = _place_outputs(out, qc, exclude_flagged)
    _write_tables(out, scans, qc, exclude_flagged)
    plot_qc_mosaic(
        images,
        out / "qc_mosaic.png",
        titles=[f"{_label(r)} {r.correlation:.2f}" for r in qc.loc[ok].itertuples()],
        flagged=qc.loc[ok, "flagged"].to_numpy(dtype=bool),
        contour=mni_brain_mask(grid),
    )
    _warn_problems(qc, out, exclude_flagged)
    return qc
