"""Latency and throughput of ``brainmaps serve``: upload -> result, through the real server.

Starts the web application (:func:`brainmaps.serve.app.create_app`) under uvicorn in a
thread of this process, on a free loopback port, and talks to it with httpx as a client
would: ``POST /predict`` (multipart), poll ``GET /jobs/{id}``, ``GET /jobs/{id}/result``.
It measures:

1. **already-registered scan**: seconds from the start of the upload to the result
   received, for a synthetic MNI-space scan (2 mm), one upload at a time; median, min and
   max over ``--uploads`` uploads (after one warm-up upload that is not counted: it loads
   the MNI template and warms the kernels). Goal: under 5 s.
2. **raw T1**: the same for native-space T1 scans, which the server registers to MNI
   (N4, brain mask, affine) before predicting: the IXI scans of
   ``../shared/data/ixi-dev`` when present, else a synthetic scan moved out of MNI space
   (rotated 10 degrees about the left-right axis, shifted 20 mm, resampled with scipy
   onto a new scanner-like grid and written with that grid's affine). The table says
   which. Goal: under 60 s.
3. **throughput**: ``--clients`` concurrent clients (default 4) upload
   ``--throughput-uploads`` already-registered scans (default 8) as fast as they can;
   scans per minute = uploads / wall-clock seconds from the first upload to the last
   result. The server runs ``--workers`` jobs at once (default 1) with the default queue;
   a ``503`` is retried after its ``Retry-After`` seconds (counted in the latency).

The stage column is the median of each stage of the result's ``seconds`` field (the
server's own clock: validating, registering, predicting, explaining:<method>); "other"
is the median of the latency not in those stages (upload, unpacking, the check of the
scan before it is queued, writing the output files, queueing, polling every 50 ms, the
result's transfer).

The run: ``--run RUN`` serves an existing one-channel run; otherwise a synthetic cohort
(``--subjects``, default 24, 2 mm voxels, in ``--out`` or a temporary folder) is made and
a run trained on it at the demo's model grid (36x44x36, xin2019, 5 folds) for
``--epochs`` (default 1): its accuracy is not measured, only the cost of its 5 fold
models. The machine's cores and load average are printed with the table (a load above
the number of cores means the timings were taken under load).

Usage::

    python benchmarks/serve.py [--quick] [--run RUN] [--out DIR] [--methods hires_cam]
                               [--uploads 5] [--throughput-uploads 8] [--clients 4]

``--quick`` makes 12 subjects, trains 2 folds, and sends 2 + 1 + 4 uploads: a check that
the benchmark runs end to end, not a measurement. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import torch
import uvicorn
from scipy import ndimage

from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.data.synthetic import make_synthetic_cohort
from brainmaps.demo import DemoSettings
from brainmaps.run.config import DataConfig, ExecutionConfig, RunConfig, TrainingConfig
from brainmaps.serve.app import ServeSettings, create_app
from brainmaps.serve.engine import Engine
from brainmaps.training.run import train_run

REPO = Path(__file__).resolve().parents[1]
IXI = REPO / ".." / "shared" / "data" / "ixi-dev"
GOALS = {"already-registered": 5.0, "raw T1": 60.0}
POLL_S = 0.05
JOB_TIMEOUT_S = 900.0


# -- the run and the scans -----------------------------------------------------------------
def make_run(out: Path, n_subjects: int, folds: int, epochs: int, device: str) -> Path:
    """A synthetic 2 mm cohort in ``out/cohort`` and a run trained on it in ``out/run``."""
    cohort = out / "cohort"
    if not (cohort / "participants.tsv").is_file():
        make_synthetic_cohort(cohort, n_subjects=n_subjects, seed=0, n_jobs=2, progress=False)
    demo = DemoSettings()
    config = RunConfig(
        data=DataConfig(source=str(cohort), target="group"),
        preprocess=PreprocessConfig(grid_shape=tuple(demo.grid_shape)),
        training=TrainingConfig(
            folds=folds, epochs=epochs, lr=demo.lr, batch_size=demo.batch_size, seed=demo.seed
        ),
        out=str(out / "run"),
        execution=ExecutionConfig(
            device=device, n_jobs=2, cache_dir=str(out / "cache"), progress=False
        ),
    )
    train_run(config, progress=False)
    return out / "run"


def mni_scans(out: Path, n: int) -> list[Path]:
    """Already-registered scans: the synthetic cohort's (made here if there is none)."""
    cohort = out / "cohort"
    if not (cohort / "participants.tsv").is_file():
        make_synthetic_cohort(cohort, n_subjects=max(2, n), seed=1, n_jobs=2, progress=False)
    scans = sorted(cohort.glob("sub-*/anat/sub-*_T1w.nii.gz"))
    return [scans[i % len(scans)] for i in range(n)]


def move_out_of_mni(src: Path, dest: Path, degrees: float = 10.0, shift_mm: float = 20.0) -> Path:
    """Write ``src`` rotated and shifted in world space, on a new scanner-like grid.

    The brain is rotated by ``degrees`` about the left-right axis through the origin and
    shifted ``shift_mm`` forward and ``shift_mm / 2`` up; the new grid has the voxel size
    and axes of ``src``, 16 mm more on each side, and its origin at its centre (as a
    scanner writes it). Voxels are resampled (trilinear) so that the image, read by its
    new affine, really is somewhere else: not an MNI-space scan with an edited header.
    """
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32)
    theta = np.deg2rad(degrees)
    move = np.eye(4)
    move[1:3, 1:3] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    move[:3, 3] = [0.0, shift_mm, shift_mm / 2]
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    pad = np.ceil(16.0 / zooms).astype(int)
    shape = np.asarray(data.shape) + 2 * pad
    affine = img.affine.copy()
    affine[:3, 3] = -affine[:3, :3] @ ((shape - 1) / 2)
    # new voxel -> world (new affine) -> world before the move -> voxel of src
    to_src = np.linalg.inv(img.affine) @ np.linalg.inv(move) @ affine
    moved = ndimage.affine_transform(
        data, to_src[:3, :3], offset=to_src[:3, 3], output_shape=tuple(shape), order=1
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(moved.astype(np.float32), affine), dest)
    return dest


def native_scans(out: Path, n: int, source: Path, synthetic: bool) -> tuple[list[Path], str]:
    """Raw native-space T1s (IXI when present) and a description of them."""
    found = sorted(source.glob("sub-*/anat/*_T1w.nii.gz")) if not synthetic else []
    if found:
        return found[:n], f"IXI raw T1 ({source.resolve().name})"
    scans = [
        move_out_of_mni(p, out / "native" / f"moved-{i}_T1w.nii.gz")
        for i, p in enumerate(mni_scans(out, n))
    ]
    why = "--synthetic-native" if synthetic else f"no IXI at {source}"
    return scans, f"synthetic, rotated 10 deg + shifted 20 mm ({why})"


# -- the server and its clients ------------------------------------------------------------
@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a daemon thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-bench", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def upload_and_wait(client: httpx.Client, path: Path) -> dict:
    """Upload one scan, wait for its result; return it with ``latency`` and ``retries``."""
    data = path.read_bytes()
    start = time.perf_counter()
    retries = 0
    while True:
        response = client.post("/predict", files={"file": (path.name, data, "application/gzip")})
        if response.status_code != 503:
            break
        retries += 1
        time.sleep(int(response.headers.get("Retry-After", "1")))
    if response.status_code != 202:
        raise SystemExit(
            f"{path.name}: POST /predict answered {response.status_code}: {response.text}"
        )
    job_id = response.json()["id"]
    while True:
        status = client.get(f"/jobs/{job_id}").json()
        if status["status"] in ("done", "failed"):
            break
        if time.perf_counter() - start > JOB_TIMEOUT_S:
            raise SystemExit(f"{path.name}: job {job_id} did not end: {status}")
        time.sleep(POLL_S)
    response = client.get(f"/jobs/{job_id}/result")
    latency = time.perf_counter() - start
    if response.status_code != 200:
        return {"error": response.json().get("error"), "latency": latency, "retries": retries}
    result = response.json()["results"][0]
    return {**result, "latency": latency, "retries": retries}


def sequential(url: str, scans: list[Path]) -> list[dict]:
    """Upload the scans one at a time."""
    with httpx.Client(base_url=url, timeout=JOB_TIMEOUT_S) as client:
        return [upload_and_wait(client, p) for p in scans]


def concurrent(url: str, scans: list[Path], clients: int) -> tuple[list[dict], float]:
    """``clients`` threads share the uploads; return the results and the wall seconds."""
    todo: queue.Queue[Path] = queue.Queue()
    for p in scans:
        todo.put(p)

    def client_loop() -> list[dict]:
        out = []
        with httpx.Client(base_url=url, timeout=JOB_TIMEOUT_S) as client:
            while True:
                try:
                    path = todo.get_nowait()
                except queue.Empty:
                    return out
                out.append(upload_and_wait(client, path))

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(lambda _: client_loop(), range(clients)) for r in rs]
    return results, time.perf_counter() - start


# -- the table -----------------------------------------------------------------------------
def stages(results: list[dict]) -> str:
    """Median seconds of each stage of the results, and of the rest of the latency."""
    ok = [r for r in results if "seconds" in r]
    if not ok:
        return "-"
    names = list(dict.fromkeys(k for r in ok for k in r["seconds"]))
    parts = [f"{k} {statistics.median(r['seconds'].get(k, 0.0) for r in ok):.2f}" for k in names]
    other = statistics.median(r["latency"] - sum(r["seconds"].values()) for r in ok)
    return ", ".join([*parts, f"other {other:.2f}"])


def row(case: str, results: list[dict], per_minute: float | None = None) -> dict:
    """One line of the table: latencies, the goal of the case, its stages."""
    latencies = [r["latency"] for r in results]
    goal = GOALS.get(case.split(":")[0])
    median = statistics.median(latencies)
    errors = [r["error"] for r in results if "error" in r]
    spaces = sorted({r["space"] for r in results if "space" in r})
    return {
        "case": case,
        "scans": len(results),
        "median s": f"{median:.2f}",
        "min s": f"{min(latencies):.2f}",
        "max s": f"{max(latencies):.2f}",
        "scans/min": f"{per_minute:.1f}" if per_minute is not None else "-",
        "goal": f"< {goal:g} s" if goal else "-",
        "met?": ("yes" if median < goal and not errors else "no") if goal else "-",
        "space": "/".join(spaces) or "-",
        "503 retries": sum(r["retries"] for r in results),
        "stages, median s": stages(results)
        + (f"; {len(errors)} failed: {errors[0]}" if errors else ""),
    }


def markdown(rows: list[dict]) -> str:
    """Format the rows as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run :func:`measure` in ``--out`` or a temporary folder."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="an existing one-channel run (default: train one)")
    p.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    p.add_argument("--subjects", type=int, default=24, help="synthetic subjects (24)")
    p.add_argument("--folds", type=int, default=DemoSettings().folds, help="folds (the demo's 5)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (1)")
    p.add_argument("--methods", default="hires_cam", help="maps per scan, comma-separated, or none")
    p.add_argument("--uploads", type=int, default=5, help="uploads per latency case (5)")
    p.add_argument("--throughput-uploads", type=int, default=8, help="uploads, throughput (8)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients, throughput (4)")
    p.add_argument("--workers", type=int, default=1, help="server jobs at once (1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--ixi", type=Path, default=IXI, help="folder of raw T1s (ixi-dev)")
    p.add_argument(
        "--synthetic-native",
        action="store_true",
        help="move a synthetic scan out of MNI space even when IXI is present",
    )
    p.add_argument("--quick", action="store_true", help="12 subjects, 2 folds, 2+1+4 uploads")
    args = p.parse_args()
    if args.quick:
        args.subjects, args.folds = min(args.subjects, 12), min(args.folds, 2)
        args.uploads, args.throughput_uploads = 2, 4
    with contextlib.ExitStack() as stack:
        if args.out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        else:
            out = args.out
            out.mkdir(parents=True, exist_ok=True)
        measure(args, out)


def measure(args: argparse.Namespace, out: Path) -> None:
    """Build or open the run in ``out``, serve it, measure, print the table."""
    load_before = os.getloadavg()[0]

    start = time.perf_counter()
    run_dir = args.run or make_run(out, args.subjects, args.folds, args.epochs, args.device)
    train_s = time.perf_counter() - start
    mni = mni_scans(out, args.uploads + 1)
    n_native = 1 if args.quick else args.uploads
    native, native_what = native_scans(out, n_native, args.ixi, args.synthetic_native)

    methods = [] if args.methods.strip().lower() == "none" else args.methods.split(",")
    engine = Engine(run_dir, methods=methods, device=args.device)
    app = create_app(engine, ServeSettings(workers=args.workers, root=out / "jobs"))
    described = engine.describe()
    with running_server(app) as url:
        sequential(url, mni[:1])  # warm-up, not counted
        rows = [row("already-registered", sequential(url, mni[1:]))]
        rows.append(row(f"raw T1: {native_what}", sequential(url, native)))
        many = mni_scans(out, args.throughput_uploads)
        results, wall = concurrent(url, many, args.clients)
        rows.append(row(f"throughput: {args.clients} clients", results, 60 * len(results) / wall))

    trained = f"trained here in {train_s:.0f} s" if not args.run else "given"
    grid = "x".join(map(str, described["grid"]))
    print(
        f"run {described['run']} ({trained}): {described['n_models']} {described['model']} "
        f"fold models, grid {grid}, maps: {', '.join(described['methods']) or 'none'}; "
        f"server workers={args.workers}, queue {ServeSettings().max_queued}; device "
        f"{engine.ensemble.device}, torch threads {torch.get_num_threads()}; {os.cpu_count()} "
        f"cores, load avg before/after {load_before:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print()
    print(markdown(rows))


if __name__ == "__main__":
    main()
