"""Training/inference throughput of xin2019 and peak memory against cohort size.

Measures, in one run on this machine:

1. volumes per second for training steps and for inference of xin2019 at the model grid
   (default 58x70x58, the paper's), reading volumes from the memory-mapped cache versus
   loading and preprocessing the NIfTI file for every volume (what a loader without a
   cache does every epoch);
2. the peak resident memory (RSS) of one training epoch over 100 and over 400 subjects
   read from the cache, each in a fresh process: it must not grow with the number of
   subjects.

Usage::

    python benchmarks/train_throughput.py [--grid 58x70x58] [--subjects 100 400]
                                          [--work bench-out] [--volumes 32]

Prints a Markdown table (paste it into the README).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from brainmaps.data.cache import cache_volumes
from brainmaps.data.preprocess import PreprocessConfig, parse_grid, preprocess_img
from brainmaps.data.synthetic import make_synthetic_cohort
from brainmaps.models import create_model

BATCH = 8


def cohort_paths(work: Path, n: int) -> list[str]:
    """Return n image paths: a 100-subject synthetic cohort, hard-linked to reach n."""
    cohort = work / "cohort"
    if not (cohort / "participants.tsv").is_file():
        make_synthetic_cohort(cohort, n_subjects=100, seed=0, n_jobs=2, progress=False)
    base = sorted(cohort.glob("sub-*/anat/*_T1w.nii.gz"))
    paths = []
    for i in range(n):
        src = base[i % len(base)]
        if i < len(base):
            paths.append(str(src))
            continue
        dst = work / "copies" / f"rep{i // len(base)}" / src.name
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
        paths.append(str(dst))
    return paths


def _batches(n: int):
    for start in range(0, n, BATCH):
        yield np.arange(start, min(n, start + BATCH))


def _run(model, load, n: int, train: bool) -> float:
    """Volumes per second over n volumes; load(i) returns one (X, Y, Z) array."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    model.train(train)
    start = time.perf_counter()
    for idx in _batches(n):
        x = torch.from_numpy(np.stack([load(int(i)) for i in idx]))[:, None]
        if train:
            y = torch.from_numpy((idx % 2).astype(np.int64))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        else:
            with torch.no_grad():
                model(x)
    return n / (time.perf_counter() - start)


def throughput(paths: list[str], config: PreprocessConfig, cache_dir: Path) -> list[tuple]:
    """Return rows (mode, source, volumes/s) for memmap and NIfTI reading."""
    volumes = cache_volumes(paths, config, cache_dir, n_jobs=2, progress=False)
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=config.grid_shape)
    rows = []
    for train in (True, False):
        mode = "train step" if train else "inference"
        mem = _run(model, lambda i: volumes[i], len(paths), train)
        nii = _run(model, lambda i: preprocess_img(paths[i], config), len(paths), train)
        rows.append((mode, mem, nii))
    return rows


def rss_child(n: int, grid: str, work: Path) -> None:
    """One training epoch over n cached subjects; prints the peak RSS in MiB."""
    config = PreprocessConfig(grid_shape=parse_grid(grid))
    paths = cohort_paths(work, n)
    volumes = cache_volumes(paths, config, work / "cache", progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=config.grid_shape)
    rate = _run(model, lambda i: volumes[i], n, train=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n}\t{before:.0f}\t{peak:.0f}\t{rate:.2f}")


def peak_rss(n: int, grid: str, work: Path) -> tuple[float, float, float]:
    """Run :func:`rss_child` in a fresh interpreter; return (rss before, peak, vol/s)."""
    cmd = [sys.executable, __file__, "--rss-child", str(n), "--grid", grid, "--work", str(work)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    _, before, peak, rate = out.strip().splitlines()[-1].split("\t")
    return float(before), float(peak), float(rate)


def main() -> None:
    """Parse arguments, run the measurements, print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="58x70x58")
    p.add_argument("--subjects", type=int, nargs="+", default=[100, 400])
    p.add_argument("--volumes", type=int, default=32, help="volumes for the throughput rows")
    p.add_argument("--work", default="bench-out", help="scratch folder (kept for re-runs)")
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--clean", action="store_true", help="delete the scratch folder first")
    args = p.parse_args()
    work = Path(args.work)
    if args.rss_child:
        rss_child(args.rss_child, args.grid, work)
        return
    if args.clean:
        shutil.rmtree(work, ignore_errors=True)
    config = PreprocessConfig(grid_shape=parse_grid(args.grid))
    print(f"xin2019 at {args.grid}, batch {BATCH}, torch threads {torch.get_num_threads()}")
    print("\n| step | memmap cache (vol/s) | NIfTI each time (vol/s) | ratio |")
    print("|---|---|---|---|")
    paths = cohort_paths(work, max(args.subjects))
    for mode, mem, nii in throughput(paths[: args.volumes], config, work / "cache"):
        print(f"| {mode} | {mem:.2f} | {nii:.2f} | {mem / nii:.2f}x |")
    cache_volumes(paths, config, work / "cache", n_jobs=2, progress=False)
    print("\n| subjects | RSS after start (MiB) | peak RSS, one epoch (MiB) | train vol/s |")
    print("|---|---|---|---|")
    peaks = []
    for n in args.subjects:
        before, peak, rate = peak_rss(n, args.grid, work)
        peaks.append(peak)
        print(f"| {n} | {before:.0f} | {peak:.0f} | {rate:.2f} |")
    print(
        f"\npeak RSS ratio {args.subjects[-1]} vs {args.subjects[0]} subjects: "
        f"{peaks[-1] / peaks[0]:.3f} (1.0 = does not grow with N)"
    )


if __name__ == "__main__":
    main()
