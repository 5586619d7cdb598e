"""Brain-age members: training throughput of mrinet and sfcn, and the cost of LRP composite.

Measures, on one device (the CPU, or one CUDA GPU when available or ``--device cuda``),
for the two brain-age regressors (``n_classes=1``) that ``train --ensemble`` trains as
members, at 2 mm (1 x 91 x 109 x 91) and at the 58 x 70 x 58 grid:

1. **train**: volumes per second and seconds per training step of one ensemble member,
   a step being what :mod:`brainmaps.training.loop` does for regression: ``zero_grad``,
   forward under ``torch.autocast``, MSE on (standardised) targets
   (:class:`brainmaps.tasks.Regression`), ``GradScaler``-scaled backward, Adam (lr 3e-4)
   step; model in train mode (dropout; BatchNorm batch statistics in sfcn). Peak memory:
   on the CPU, the peak resident memory of the process
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: interpreter, torch, weights, Adam
   state, activations) and its growth over the steps (peak minus the RSS just before the
   first warm-up step); on CUDA, ``torch.cuda.max_memory_allocated`` and its growth over
   ``memory_allocated`` before the steps. Each (model, grid) row runs in a fresh
   interpreter, so one row's peak does not carry over to the next. The vol/s ratio is
   against mrinet at the same grid, measured in the same run.
2. **LRP composite per subject** against one forward + backward of the same model, eval
   mode, batch 1 and batch 4: the reference is the gradient of the output with respect
   to the input (``torch.autograd.grad(model(x).sum(), x)``, parameters frozen as
   attribution freezes them), the explanation is
   ``LRP(model, rule="composite", epsilon=0.1).attribute(x)`` (alpha1beta0 in every
   Conv3d, epsilon in every Linear; iNNvestigate's ``LRPSequentialPresetA``, Hofmann et
   al.), which includes its own target forward, the layer trace and replay and, for sfcn,
   folding each BatchNorm into the convolution before it. mrinet has no BatchNorm. Both are
   timed in the same fresh process, interleaved (gradient, LRP, gradient, LRP, ...) so
   that a change of machine load hits both alike; the ratio is LRP over gradient seconds
   (goal: at most 2x). The peak memory column is that of the whole row (both methods).

Inputs and targets are random tensors made once on the device (speed does not depend on
the values; no data loading is timed); weights are the models' random initialisation.
``--warmup`` steps are run, then ``--steps`` are timed (CUDA synchronised before the
clock starts and stops).

CPU: float32, ``torch.set_num_threads(--threads)``. CUDA: training with AMP as the
training loop uses it (float16 autocast + GradScaler; ``--no-amp`` for float32); the
LRP and gradient rows stay float32 (LRP has no autocast; its maps are computed in the
input's dtype).

Usage::

    python benchmarks/brain_age.py [--device auto] [--batch 4] [--warmup 1] [--steps 3]
        [--threads N] [--grids 91x109x91 58x70x58] [--lrp-grids 58x70x58 91x109x91]
        [--lrp-batches 1 4] [--models mrinet sfcn] [--no-train] [--no-lrp] [--quick]

``--quick`` runs every row at 40 x 48 x 40 for 1 + 2 steps: a check that the script
runs, in seconds, not a measurement. Prints Markdown tables (paste them into the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from _rows import ROW_TAG, device_name, memory_now, memory_peak, run_row, sync
from brainmaps.attribution.lrp import LRP
from brainmaps.data.preprocess import parse_grid
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.models.device import resolve_device
from brainmaps.tasks import get_task

MODELS = ("mrinet", "sfcn")
GRID_2MM = "91x109x91"
GRID_58 = "58x70x58"
LR = 3e-4
LRP_EPSILON = 0.1  # iNNvestigate's default epsilon (Hofmann et al.); timing does not depend on it
GOAL = 2.0  # LRP composite per subject at most 2x one forward + backward
QUICK = {"grids": ["40x48x40"], "lrp_grids": ["40x48x40"], "steps": 2, "warmup": 1}


# --------------------------------------------------------------------------- memory


def _build(name: str, grid, dev: torch.device | str) -> torch.nn.Module:
    return create_model(name, in_channels=1, n_classes=1, input_shape=grid).to(dev)


def measure_train(spec: dict) -> dict:
    """Time ``warmup`` + ``steps`` regression training steps of one (model, grid) row."""
    torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    use_amp = dev.type == "cuda" and spec["amp"]
    task = get_task("regression")
    torch.manual_seed(0)
    model = _build(spec["model"], spec["grid"], dev).train()
    batch = spec["batch"]
    x = torch.randn(batch, 1, *spec["grid"], device=dev)
    y = torch.randn(batch, device=dev)  # standardised ages, as the loop trains on
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
            loss = task.loss(task.shape_outputs(model(x)), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    sync(dev)
    before = memory_now(dev)
    start = time.perf_counter()
    for _ in range(spec["warmup"]):
        step()
    sync(dev)
    warm = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    sync(dev)
    seconds = time.perf_counter() - warm
    peak = memory_peak(dev)
    return {
        "vol_s": batch * spec["steps"] / seconds,
        "s_step": seconds / spec["steps"],
        "warmup_s": warm - start,
        "peak_mib": peak,
        "growth_mib": peak - before,
        "params": sum(p.numel() for p in model.parameters()),
    }


def measure_lrp(spec: dict) -> dict:
    """Time the input gradient and LRP composite, interleaved, for one row."""
    torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    torch.manual_seed(0)
    model = _build(spec["model"], spec["grid"], dev).eval()
    batch = spec["batch"]
    x = torch.randn(batch, 1, *spec["grid"], device=dev)
    lrp = LRP(model, rule="composite", epsilon=LRP_EPSILON)

    def gradient() -> None:
        flags = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(leaf).sum(), leaf)
        finally:
            for p, flag in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        assert grad.shape == x.shape

    def explain() -> None:
        maps = lrp.attribute(x)
        assert maps.shape == (batch, *spec["grid"])

    def timed(fn) -> float:
        sync(dev)
        start = time.perf_counter()
        fn()
        sync(dev)
        return time.perf_counter() - start

    sync(dev)
    before = memory_now(dev)
    for _ in range(spec["warmup"]):
        gradient()
        explain()
    grad_s = lrp_s = 0.0
    for _ in range(spec["steps"]):
        grad_s += timed(gradient)
        lrp_s += timed(explain)
    peak = memory_peak(dev)
    per = spec["steps"] * batch
    return {
        "grad_s": grad_s / per,
        "lrp_s": lrp_s / per,
        "ratio": lrp_s / grad_s,
        "peak_mib": peak,
        "growth_mib": peak - before,
    }


# --------------------------------------------------------------------------- report


def _grid_label(grid) -> str:
    return " x ".join(map(str, [1, *grid]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; fill the ``--quick`` defaults."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<n>")
    p.add_argument("--batch", type=int, default=4, help="volumes per training step (4)")
    p.add_argument("--steps", type=int, help="timed steps/repetitions (default 3; --quick 2)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 1)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--grids", nargs="+", help=f"training grids (default {GRID_2MM} {GRID_58})")
    p.add_argument("--lrp-grids", nargs="+", help=f"LRP grids (default {GRID_58} {GRID_2MM})")
    p.add_argument("--lrp-batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 training on CUDA")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip table 1")
    p.add_argument("--no-lrp", dest="lrp", action="store_false", help="skip table 2")
    p.add_argument("--quick", action="store_true", help="40x48x40, 1 + 2 steps: a check")
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        return args
    try:
        resolve_device(args.device)
    except ConfigError as exc:
        p.error(str(exc))
    quick = QUICK if args.quick else {}
    defaults = {
        "steps": quick.get("steps", 3),
        "warmup": quick.get("warmup", 1),
        "grids": quick.get("grids", [GRID_2MM, GRID_58]),
        "lrp_grids": quick.get("lrp_grids", [GRID_58, GRID_2MM]),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch", "steps", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if min(args.lrp_batches) < 1:
        p.error("--lrp-batches must be at least 1")
    try:
        args.grids = [list(parse_grid(g)) for g in args.grids]
        args.lrp_grids = [list(parse_grid(g)) for g in args.lrp_grids]
    except ConfigError as exc:
        p.error(str(exc))
    return args


def _train_table(args, spec: dict, memory: str, train_label: str) -> bool:
    print(f"\n### Training one member ({train_label}, batch {args.batch}, Adam, train mode)\n")
    print(
        f"| model | grid | parameters | vol/s | s/step | vs mrinet | {memory} (MiB) "
        "| growth over steps (MiB) | warm-up (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for grid in args.grids:
        results = {
            m: run_row(
                __file__, {**spec, "kind": "train", "model": m, "grid": grid, "batch": args.batch}
            )
            for m in args.models
        }
        ref = results.get("mrinet", {})
        for m, r in results.items():
            if "error" in r:
                ok = False
                print(f"| {m} | {_grid_label(grid)} | failed: {r['error']} | | | | | | |")
                continue
            ratio = f"{r['vol_s'] / ref['vol_s']:.2f}x" if "vol_s" in ref else "-"
            print(
                f"| {m} | {_grid_label(grid)} | {r['params']:,} | {r['vol_s']:.3g} "
                f"| {r['s_step']:.3g} | {ratio} | {r['peak_mib']:.0f} | {r['growth_mib']:.0f} "
                f"| {r['warmup_s']:.1f} |"
            )
    return ok


def _lrp_table(args, spec: dict, memory: str) -> bool:
    print(
        f"\n### LRP composite (epsilon {LRP_EPSILON:g}) vs one forward + backward "
        "(input gradient), eval mode, float32\n"
    )
    print(
        "| model | grid | batch | gradient (s/subject) | LRP composite (s/subject) "
        f"| ratio | <= {GOAL:g}x | {memory} of the row (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for grid in args.lrp_grids:
        for m in args.models:
            for batch in args.lrp_batches:
                r = run_row(
                    __file__, {**spec, "kind": "lrp", "model": m, "grid": grid, "batch": batch}
                )
                label = f"{m}{' (BatchNorm folded)' if m == 'sfcn' else ''}"
                if "error" in r:
                    ok = False
                    print(
                        f"| {label} | {_grid_label(grid)} | {batch} | failed: {r['error']} "
                        "| | | | |"
                    )
                    continue
                print(
                    f"| {label} | {_grid_label(grid)} | {batch} | {r['grad_s']:.3g} "
                    f"| {r['lrp_s']:.3g} | {r['ratio']:.2f}x "
                    f"| {'yes' if r['ratio'] <= GOAL else 'no'} | {r['peak_mib']:.0f} |"
                )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Measure every row in a fresh process; print the tables."""
    args = parse_args(argv)
    if args.row:
        spec = json.loads(args.row)
        measure = measure_train if spec["kind"] == "train" else measure_lrp
        print(ROW_TAG + json.dumps(measure(spec)), flush=True)
        return 0
    dev = resolve_device(args.device)
    spec = {
        "device": str(dev),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "amp": args.amp,
    }
    load_before = os.getloadavg()
    print(
        f"brain-age members {', '.join(args.models)} (regression, n_classes=1); device "
        f"{device_name(dev)}; torch {torch.__version__}; threads {args.threads}; "
        f"{args.warmup} warm-up + {args.steps} timed steps{' (--quick)' if args.quick else ''}"
    )
    memory = "peak CUDA allocated" if dev.type == "cuda" else "peak RSS"
    train_label = "AMP float16" if dev.type == "cuda" and args.amp else "float32"
    ok = True
    if args.train:
        ok &= _train_table(args, spec, memory, train_label)
    if args.lrp:
        ok &= _lrp_table(args, spec, memory)
    after = os.getloadavg()
    print(
        "\nload average (1/5/15 min) before: "
        f"{'/'.join(f'{v:.2f}' for v in load_before)}, after: "
        f"{'/'.join(f'{v:.2f}' for v in after)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
