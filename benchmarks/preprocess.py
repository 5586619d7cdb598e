"""Seconds per subject of ``brainmaps preprocess`` on the real IXI scans, and their quality.

Runs :func:`brainmaps.data.pipeline.preprocess_cohort` (N4, rough brain extraction,
similarity + affine registration to the 2 mm MNI152 template, masking, QC) on the 2 mm
IXI-HH scans of ``../shared/data/ixi-dev`` and reports:

- wall-clock seconds for the cohort and per subject (wall / scans, the throughput with
  ``--n-jobs`` workers), the median time one worker spends on one scan, and the CPU
  seconds of one scan in one thread (independent of the machine's load: on an idle
  2-core machine with 2 workers a scan costs about half of it in wall-clock time);
- the QC correlations with the cohort mean and with the template (ranges), flagged scans;
- registration accuracy without a ground-truth transform: the Dice overlap between each
  scan's DLMUSE brain mask (``derivatives/dlmuse``, native space) taken to MNI space with
  the found transform and the MNI152 brain mask;
- the 1-minute load average before and after (the machine is shared: a load above the
  number of cores means the timings were taken under load).

Usage::

    python benchmarks/preprocess.py [--quick] [--subjects N] [--n-jobs 2] [--work DIR]

``--quick`` runs 2 subjects. Prints a Markdown table (paste it into the README).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from brainmaps.data.pipeline import output_grid, output_paths, preprocess_cohort
from brainmaps.data.preprocess import mni_brain_mask
from brainmaps.data.registration import register_img
from brainmaps.data.transforms import apply_transform

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "ixi-dev"


def make_table(data: Path, n: int | None, folder: Path) -> tuple[Path, list[str]]:
    """Write a table of the first ``n`` subjects of ``data`` (absolute paths)."""
    table = pd.read_csv(data / "participants.tsv", sep="\t").sort_values("participant_id")
    table = table.head(n) if n else table
    subjects = [p.removeprefix("sub-") for p in table["participant_id"]]
    table["path"] = [str(data / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz") for s in subjects]
    path = folder / "scans.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path, subjects


def dlmuse_dice(data: Path, out: Path, subjects: list[str]) -> np.ndarray:
    """Dice of each DLMUSE brain mask moved to MNI with the MNI152 brain mask."""
    grid = output_grid("2mm")
    mni = mni_brain_mask(grid)
    values = []
    for sub in subjects:
        seg = data / "derivatives" / "dlmuse" / f"sub-{sub}_dseg.nii.gz"
        transform = output_paths(out, sub)[1]
        if not seg.is_file() or not transform.is_file():
            continue
        brain = np.asarray(apply_transform(seg, transform, grid, order=0).dataobj) > 0
        values.append(2 * (brain & mni).sum() / (brain.sum() + mni.sum()))
    return np.asarray(values)


def cpu_seconds(table: Path, n: int = 3) -> float:
    """Median CPU seconds of register_img on ``n`` scans, in this process, one thread."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    times = []
    try:
        register_img(pd.read_csv(table, sep="\t")["path"].iloc[0])  # warm-up: template
        for path in pd.read_csv(table, sep="\t")["path"].head(n):
            start = time.process_time()
            register_img(path)
            times.append(time.process_time() - start)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
    return float(np.median(times))


def run(args: argparse.Namespace) -> dict:
    """Preprocess the selected scans in a fresh folder; return the measurements."""
    n = 2 if args.quick else args.subjects
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    work.mkdir(parents=True, exist_ok=True)
    table, subjects = make_table(args.data, n, work)
    out = work / "out"
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    qc = preprocess_cohort(table, out, n_jobs=args.n_jobs, progress=not args.no_progress)
    wall = time.perf_counter() - start
    ok = qc[qc["status"] == "ok"]
    dice = dlmuse_dice(args.data, out, subjects)
    cpu = cpu_seconds(table, 2 if args.quick else 3)
    return {
        "scans": len(qc),
        "failed": int((qc["status"] != "ok").sum()),
        "n_jobs": args.n_jobs,
        "wall s": wall,
        "s / scan": wall / len(qc),
        "median s per scan (1 worker)": float(ok["seconds"].median()),
        "CPU s per scan (1 thread, median)": cpu,
        "QC r (cohort mean)": f"{ok['correlation'].min():.3f}-{ok['correlation'].max():.3f}",
        "flagged": int(ok["flagged"].sum()),
        "r with template": (
            f"{ok['template_correlation'].min():.3f}-{ok['template_correlation'].max():.3f}"
        ),
        "Dice DLMUSE vs MNI mask": f"{dice.mean():.3f} (min {dice.min():.3f})",
        "load avg before/after": f"{load_before:.1f}/{os.getloadavg()[0]:.1f}",
        "cores": os.cpu_count(),
        "out": str(out),
    }


def markdown(row: dict) -> str:
    """Format the measurements as a two-column Markdown table."""
    lines = ["| measure | value |", "|---|---|"]
    for key, value in row.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {text} |")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="BIDS folder (ixi-dev)")
    parser.add_argument("--subjects", type=int, default=None, help="first N subjects (all)")
    parser.add_argument("--quick", action="store_true", help="2 subjects")
    parser.add_argument("--n-jobs", type=int, default=2, help="parallel workers (2)")
    parser.add_argument("--work", help="work folder (default: a new temporary folder)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if not (args.data / "participants.tsv").is_file():
        raise SystemExit(f"no dataset at {args.data}; pass --data")
    print(markdown(run(args)))


if __name__ == "__main__":
    main()
