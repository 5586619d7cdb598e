"""Memory and time of one voxel-SVM fold: brainmaps' float32 kernel path vs a dense copy.

Each variant runs in a fresh process on the same cached volumes (random values at the
model grid, inside the MNI brain mask) and fits one outer fold of an RBF SVM:

``brainmaps-memmap``
    :func:`~brainmaps.baselines.voxels.voxel_matrix` into a memory map, then
    :func:`~brainmaps.baselines.voxels.fold_kernel` (float32 blocks) and an SVC on the
    precomputed kernel;
``brainmaps-ram``
    the same with the float32 matrix in memory;
``dense-float64``
    what a straightforward script does: stack the masked volumes as float64,
    ``StandardScaler().fit_transform`` (a second copy) and ``SVC(kernel="rbf")``.

Reported: wall time, and the growth during the fit (imports excluded) of the peak
resident memory (``ru_maxrss``, which counts the file-backed pages of the memory map that
the kernel can drop) and of the peak anonymous memory (sampled ``RssAnon``: the memory that
cannot be reclaimed).

Usage::

    python benchmarks/baselines.py [--subjects 400] [--grid 58x70x58] [--work bench-out]
    python benchmarks/baselines.py --quick

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from brainmaps.data.cache import CachedVolumes
from brainmaps.data.preprocess import mni_brain_mask, mni_grid, parse_grid

VARIANTS = ("brainmaps-memmap", "brainmaps-ram", "dense-float64")


def make_volumes(work: Path, n: int, shape: tuple[int, int, int]) -> Path:
    """Write ``n`` random float32 volumes in the cache's raw layout (one slot each)."""
    path = work / f"volumes_{n}_{'x'.join(map(str, shape))}.f32"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        with open(path, "wb") as handle:
            for i in range(n):
                volume = rng.normal(size=shape).astype(np.float32)
                volume[:8] += 0.3 * (i % 2)  # a weak group effect
                handle.write(volume.tobytes())
    return path


def _rss_anon_kb() -> int:
    text = Path("/proc/self/status").read_text()
    return int(next(x for x in text.splitlines() if x.startswith("RssAnon:")).split()[1])


class AnonPeak:
    """Sample ``RssAnon`` of this process every 20 ms; keep the increase of its maximum (kB)."""

    def __init__(self) -> None:
        self.start = _rss_anon_kb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_anon_kb())
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_variant(variant: str, path: Path, n: int, shape: tuple[int, int, int]) -> dict:
    """Fit one fold (first 80 % train, last 20 % test) and return time and memory."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from brainmaps.baselines.voxels import fold_kernel, voxel_matrix

    volumes = CachedVolumes(path, np.arange(n), shape)
    mask = mni_brain_mask(mni_grid(shape))
    y = np.arange(n) % 2
    train, test = np.arange(int(0.8 * n)), np.arange(int(0.8 * n), n)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with AnonPeak() as anon:
        if variant == "dense-float64":
            x = np.stack([volumes[i][mask].astype(np.float64) for i in range(n)])
            scaler = StandardScaler().fit(x[train])
            z_train, z_test = scaler.transform(x[train]), scaler.transform(x[test])
            accuracy = SVC(kernel="rbf").fit(z_train, y[train]).score(z_test, y[test])
        else:
            threshold = 0 if variant == "brainmaps-memmap" else 2**40
            x = voxel_matrix(volumes, mask, memmap_threshold=threshold)
            k_train, k_test = fold_kernel(x, train, test, "rbf")
            svc = SVC(kernel="precomputed").fit(k_train, y[train])
            accuracy = svc.score(k_test, y[test])
    return {
        "variant": variant,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024,
        "peak_anon_mb": (anon.peak - anon.start) / 1024,
        "voxels": int(mask.sum()),
        "accuracy": float(accuracy),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=400)
    parser.add_argument("--grid", type=parse_grid, default=(58, 70, 58))
    parser.add_argument("--work", type=Path, default=Path("bench-out") / "baselines")
    parser.add_argument("--quick", action="store_true", help="40 subjects at 29x35x29")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects, args.grid = 40, (29, 35, 29)
    path = make_volumes(args.work, args.subjects, args.grid)
    if args.variant:
        print(json.dumps(run_variant(args.variant, path, args.subjects, args.grid)))
        return 0
    rows = []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--work", str(args.work)]
        cmd += ["--subjects", str(args.subjects), "--grid", "x".join(map(str, args.grid))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    size_mb = args.subjects * rows[0]["voxels"] * 4 / 2**20
    print(
        f"{args.subjects} subjects, grid {'x'.join(map(str, args.grid))}, "
        f"{rows[0]['voxels']} voxels in the mask (float32 matrix {size_mb:.0f} MB)\n"
    )
    print("| variant | time (s) | peak RSS growth (MB) | peak anonymous growth (MB) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_anon_mb']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
