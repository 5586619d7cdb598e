"""Meaningful Perturbations: the fast solver against the faithful sequential reference.

Measures, in one run on this machine (2 threads):

1. **quality and speed on the demo run** (``demo/run``, xin2019 trained at 36x44x36):
   for test subjects of each fold, explained by that fold's model (target: predicted
   class), both solvers run to completion with the same options and the same jitter
   draws. Reported per subject: seconds, iterations, the *deletion score* (area under
   the target probability as the top 0, 5, ..., 100% voxels of the map are replaced by
   their blurred values; lower is better) and the *localisation* (ROC AUC of the map
   values inside against outside the planted ground-truth mask, brain voxels only).
   The options are the defaults: the paper's sizes in millimetres (its voxels of 3.13
   mm), which the method converts to this grid's voxels.
2. **speed at 58x70x58** (xin2019 32/64/128, random weights; run time does not depend
   on the weights): the reference is timed for ``--ref-iters`` iterations and
   extrapolated to its 300; the fast solver runs a batch of ``--batch`` subjects for as
   many iterations as it needed on average in part 1 (its stopping rule cannot be
   exercised on random weights, where nothing is ever deleted).

Usage::

    python benchmarks/meaningful_perturbation.py [--quick] [--run demo/run]
        [--subjects 8] [--batch 4] [--ref-iters 3]

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from brainmaps.attribution._filters import gaussian_blur3d
from brainmaps.attribution.meaningful_perturbation import (
    MeaningfulPerturbation,
    _class_score,
    _SequentialReference,
    blur_perturbation,
)
from brainmaps.data import mni_brain_mask, resample_to_grid
from brainmaps.models import create_model
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.run.folder import open_run

ROOT = Path(__file__).resolve().parents[1]
#: The options in millimetres (printed with the results; the defaults are the paper's).
MM_OPTIONS = ("sigma_blur_mm", "sigma_mask_mm", "mask_voxel_mm", "jitter_mm")


def deletion_score(model, x, target: int, saliency, sigma_blur, steps: int = 20):
    """Area under the target probability while deleting the top-ranked voxels (lower: better).

    ``sigma_blur``: the blur in voxels (per axis), as the method used it.
    """
    blurred = gaussian_blur3d(x, sigma_blur)
    order = torch.argsort(saliency.flatten(), descending=True)
    keep = torch.ones(steps + 1, order.numel())
    for k in range(1, steps + 1):
        keep[k, order[: round(order.numel() * k / steps)]] = 0
    keep = keep.view(steps + 1, 1, *x.shape[2:])
    probs = []
    with torch.no_grad():
        for part in keep.split(7):
            volumes = blur_perturbation(x, part, blurred)
            probs.append(_class_score(model(volumes), torch.full((len(part),), target)))
    return float(np.trapezoid(torch.cat(probs).numpy(), dx=1 / steps))


def pick_subjects(run, n: int) -> dict[int, list[int]]:
    """Round-robin over the folds: {fold: [row indices of its test subjects]}."""
    per_fold = {k: list(run.indices(k, "test")) for k in range(run.n_folds)}
    chosen: dict[int, list[int]] = {}
    for i in range(n):
        k = i % run.n_folds
        if per_fold[k]:
            chosen.setdefault(k, []).append(int(per_fold[k].pop(0)))
    return chosen


def explain(cls, model, x, targets, options):
    method = cls(model, **options)
    start = time.perf_counter()
    maps = method.attribute(x, target=targets)
    return maps, time.perf_counter() - start, method.n_iter_.tolist()


def quality_part(args) -> dict:
    run = open_run(ROOT / args.run)
    vols = run.volumes()
    gt_img = nib.load(ROOT / args.run / ".." / "cohort" / "ground_truth_mask.nii.gz")
    truth = resample_to_grid(gt_img, run.grid, order=0) > 0
    brain = mni_brain_mask(run.grid)
    options = dict(args.overrides)
    defaults = MeaningfulPerturbation(torch.nn.Identity(), **options)
    sigma_blur = defaults.in_voxels(run.grid.shape).sigma_blur
    rows = {"fast": [], "reference": []}
    for fold, idx in pick_subjects(run, args.subjects).items():
        model, _ = model_from_checkpoint(run.checkpoints()[fold])
        x = torch.from_numpy(np.stack([vols[i] for i in idx]))[:, None].float()
        with torch.no_grad():
            targets = model(x).argmax(dim=1)
        for name, cls in (("fast", MeaningfulPerturbation), ("reference", _SequentialReference)):
            maps, seconds, iters = explain(cls, model, x, targets, options)
            for k in range(len(idx)):
                rows[name].append(
                    {
                        "seconds": seconds / len(idx),
                        "iterations": iters[k],
                        "deletion": deletion_score(
                            model, x[k : k + 1], int(targets[k]), maps[k], sigma_blur
                        ),
                        "localisation": roc_auc_score(truth[brain], maps[k].numpy()[brain]),
                    }
                )
    shown = {k: getattr(defaults, k) for k in MM_OPTIONS} | options
    return {"options": shown, "rows": rows, "grid": run.grid.shape}


def speed_part(args, iterations: int) -> dict:
    shape = (58, 70, 58)
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=shape).eval()
    gen = torch.Generator().manual_seed(0)
    x = gaussian_blur3d(torch.randn((args.batch, 1, *shape), generator=gen), 2.0)
    overrides = {k: v for k, v in args.overrides.items() if k == "n_draws"}
    _SequentialReference(model, max_iter=1, n_draws=1).attribute(x[:1], target=1)  # warm-up
    ref = _SequentialReference(model, max_iter=args.ref_iters, **overrides)
    start = time.perf_counter()
    ref.attribute(x[:1], target=1)
    ref_seconds = (time.perf_counter() - start) / args.ref_iters * 300
    fast = MeaningfulPerturbation(model, max_iter=iterations, tol=0.0, **overrides)
    start = time.perf_counter()
    fast.attribute(x, target=1)
    fast_seconds = (time.perf_counter() - start) / args.batch
    return {"reference": ref_seconds, "fast": fast_seconds, "iterations": iterations}


def _mean_sd(values) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def print_quality(quality: dict, args) -> str:
    """Print the table of part 1; return the grid's name."""
    opts = ", ".join(f"{k}={v:.4g}" for k, v in quality["options"].items())
    grid = "x".join(map(str, quality["grid"]))
    print(f"\n### Quality and speed on {args.run} ({grid}; {opts})\n")
    print(
        "| solver | subjects | s / subject | iterations | deletion (lower better) "
        "| localisation AUC |"
    )
    print("|---|---|---|---|---|---|")
    per = {}
    for name, rows in quality["rows"].items():
        per[name] = np.mean([r["seconds"] for r in rows])
        print(
            f"| {name} | {len(rows)} | {per[name]:.1f} | "
            f"{np.mean([r['iterations'] for r in rows]):.0f} | "
            f"{_mean_sd([r['deletion'] for r in rows])} | "
            f"{_mean_sd([r['localisation'] for r in rows])} |"
        )
    print(
        f"\nSpeed-up per subject on {grid}: {per['reference'] / per['fast']:.1f}x (both measured)"
    )
    return grid


def print_tables(quality: dict | None, speed: dict, args, loads) -> None:
    grid = print_quality(quality, args) if quality else None
    source = f"mean to convergence on {grid}" if grid else "given with --iterations"
    print(f"\n### Speed at 58x70x58 (xin2019 32/64/128, batch of {args.batch})\n")
    print("| solver | s / subject | ratio |")
    print("|---|---|---|")
    print(
        f"| reference: 1 draw per pass, 300 iterations (timed {args.ref_iters}, "
        f"extrapolated to 300) | {speed['reference']:.0f} | 1.0 |"
    )
    print(
        f"| fast: {speed['iterations']} iterations ({source}) | "
        f"{speed['fast']:.1f} | {speed['reference'] / speed['fast']:.1f}x |"
    )
    print(
        f"\nLoad average (1 min) before / after: {loads[0]:.2f} / {loads[1]:.2f} on "
        f"{os.cpu_count()} cores; torch threads: {torch.get_num_threads()}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--run", default="demo/run", help="trained run folder (repo-relative)")
    parser.add_argument("--subjects", type=int, default=8, help="demo test subjects")
    parser.add_argument("--batch", type=int, default=4, help="subjects per fast batch")
    parser.add_argument("--ref-iters", type=int, default=3, help="timed reference iterations")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--iterations", type=int, help="skip part 1; time the fast solver for this many"
    )
    args = parser.parse_args(argv)
    args.overrides = {}
    if args.quick:
        args.subjects, args.batch, args.ref_iters = 2, 2, 1
        args.overrides = {"max_iter": 8, "n_draws": 2}
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    quality = None if args.iterations else quality_part(args)
    iterations = args.iterations or round(
        np.mean([r["iterations"] for r in quality["rows"]["fast"]])
    )
    speed = speed_part(args, max(1, iterations))
    print_tables(quality, speed, args, (load_before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
