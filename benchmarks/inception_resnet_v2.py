"""Training/inference throughput and peak memory of inception_resnet_v2 (BrainImageNet).

Measures, on one device (the CPU, or one CUDA GPU when available or ``--device cuda``),
for the 3D Inception-ResNet-v2 of Lu et al. at their input, 2 channels (grey-matter
density and volume) x 96 x 120 x 86 voxels:

1. **train**: volumes per second and seconds per training step, a step being what
   :mod:`brainmaps.training.loop` does: ``zero_grad``, forward under ``torch.autocast``,
   cross-entropy, ``GradScaler``-scaled backward, Adam (lr 3e-4) step; model in train
   mode (BatchNorm batch statistics, dropout);
2. **inference**: volumes per second of the forward pass in eval mode under
   ``torch.no_grad`` (and the same autocast);
3. **peak memory**: on the CPU, the peak resident memory of the process
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: interpreter, torch, weights, Adam
   state, activations) and its growth over the steps (peak RSS at the end minus the RSS
   just before the first warm-up step, i.e. what the steps themselves add); on CUDA,
   ``torch.cuda.max_memory_allocated`` and its growth over ``memory_allocated`` before
   the steps.

Each (variant, mode) row runs in a fresh interpreter, so that the peak RSS of one row does
not carry over to the next. Inputs and labels are random tensors made once on the device
(the speed of the network does not depend on the values; no data loading is timed).
``--warmup`` steps are run, then ``--steps`` steps are timed (CUDA synchronised before the
clock starts and stops).

CPU: float32, ``torch.set_num_threads(--threads)``. CUDA: AMP as the training loop uses it
(float16 autocast + GradScaler; ``--amp-dtype bfloat16`` for bfloat16 autocast,
``--no-amp`` for float32), plus optional rows for ``--channels-last``
(``torch.channels_last_3d`` weights and inputs) and ``--compile`` (``torch.compile``; its
compilation is in the warm-up column). The vol/s ratio is against the first variant's row
of the same mode, measured in the same run.

The epoch estimate is the number of volumes over the measured training vol/s: one epoch of
``--samples`` (85,721, Lu et al.'s sex-classification data), and ``--folds`` (5) x
``--epochs`` epochs over the ``--train-fraction`` (4/5) of them each fold trains on.
Lu et al. trained their sex model for 10 epochs per fold, 5 folds (``epochs=10``,
``nFold = 5`` in ``code/TrainFromScratch_All_Sex_InceptionResNetV2_wc1_mwc1.py`` of
github.com/Chaogan-Yan/BrainImageNet; batch 24 over 4 GPUs, SGD), so ``--epochs 10`` gives
the cost of that schedule; their folds leave sites out, so 4/5 is approximate. Validation
and test passes are not in the estimate.

Usage::

    python benchmarks/inception_resnet_v2.py [--device auto] [--batch N] [--steps N]
        [--warmup N] [--threads N] [--grid 96x120x86] [--width 1.0] [--blocks 5 10 5]
        [--head full|transfer] [--epochs 1] [--channels-last] [--compile] [--quick]

``--quick`` measures a reduced network (width 0.25, blocks 1/1/1) at 48x56x48 (72x84x72
with ``--head transfer``, which needs 69 voxels per axis) for 1 + 2 steps: a check that the
script runs, in seconds, not a measurement. Prints a Markdown table (paste it into the
README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

from _rows import ROW_TAG, device_name, memory_now, memory_peak, run_row, sync
from brainmaps.data.preprocess import parse_grid
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.models.device import resolve_device

SAMPLES = 85_721
IN_CHANNELS = 2
LR = 3e-4
QUICK = {"width": 0.25, "blocks": [1, 1, 1], "grid": "48x56x48", "steps": 2, "warmup": 1}
QUICK_TRANSFER_GRID = "72x84x72"


# --------------------------------------------------------------------------- memory


def _build(spec: dict, dev: torch.device | str) -> torch.nn.Module:
    return create_model(
        "inception_resnet_v2",
        in_channels=IN_CHANNELS,
        n_classes=2,
        input_shape=spec["grid"],
        width=spec["width"],
        blocks=spec["blocks"],
        head=spec["head"],
    ).to(dev)


def measure_row(spec: dict) -> dict:
    """Time ``spec["warmup"]`` + ``spec["steps"]`` steps of one (variant, mode) row.

    Returns a dict of ``vol_s``, ``s_step``, ``warmup_s``, ``peak_mib``, ``growth_mib``.
    """
    torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    use_amp = dev.type == "cuda" and spec["amp"]
    amp_dtype = getattr(torch, spec["amp_dtype"])
    fmt = torch.channels_last_3d if spec["channels_last"] else torch.contiguous_format
    torch.manual_seed(0)
    model = _build(spec, dev).to(memory_format=fmt)
    batch = spec["batch"]
    x = torch.randn(batch, IN_CHANNELS, *spec["grid"], device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,), device=dev)
    net = torch.compile(model) if spec["compile"] else model

    if spec["mode"] == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                loss = F.cross_entropy(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    else:
        model.eval()

        def step() -> None:
            with torch.no_grad(), torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                net(x)

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
    }


# --------------------------------------------------------------------------- report


def _hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:.1f} h ({h / 24:.1f} days)" if h >= 48 else f"{h:.2f} h"


def _n_params(spec: dict) -> int:
    """Parameter count, built on the meta device (no memory) where torch allows it."""
    try:
        with torch.device("meta"):
            model = _build(spec, "meta")
    except Exception:  # an older torch without meta construction: build it for real
        model = _build(spec, "cpu")
    return sum(p.numel() for p in model.parameters())


def variants(dev: torch.device, args: argparse.Namespace) -> list[tuple[str, bool, bool]]:
    """(label, channels_last, compile) of each variant; the first is the reference."""
    if dev.type == "cuda" and args.amp:
        base = f"AMP {args.amp_dtype}"
    else:
        base = "float32"
    out = [(base, False, False)]
    if args.channels_last:
        out.append((f"{base}, channels-last", True, False))
    if args.compile:
        out.append((f"{base}, torch.compile", False, True))
    if args.channels_last and args.compile:
        out.append((f"{base}, channels-last + torch.compile", True, True))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; fill device-dependent and ``--quick`` defaults."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<n>")
    p.add_argument("--batch", type=int, help="volumes per step (default 2 on CPU, 8 on CUDA)")
    p.add_argument("--steps", type=int, help="timed steps (default 3 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 1 CPU, 5 CUDA)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    p.add_argument("--grid", help="spatial input grid (default 96x120x86, the paper's)")
    p.add_argument("--width", type=float, help="channel multiplier (default 1.0)")
    p.add_argument("--blocks", type=int, nargs=3, metavar=("A", "B", "C"), help="default 5 10 5")
    p.add_argument("--head", choices=("full", "transfer"), default="full")
    p.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 on CUDA")
    p.add_argument("--channels-last", action="store_true", help="add channels_last_3d rows")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows")
    p.add_argument("--no-inference", dest="inference", action="store_false")
    p.add_argument("--samples", type=int, default=SAMPLES, help="volumes of one epoch")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1, help="epochs per fold (Lu et al.: 10)")
    p.add_argument("--train-fraction", type=float, default=0.8, help="of samples, per fold")
    p.add_argument("--quick", action="store_true", help="reduced network, seconds: a check")
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        return args
    try:
        cuda = resolve_device(args.device).type == "cuda"
    except ConfigError as exc:
        p.error(str(exc))
    quick = QUICK if args.quick else {}
    if args.quick and args.head == "transfer":
        quick = {**quick, "grid": QUICK_TRANSFER_GRID}
    defaults = {
        "batch": 8 if cuda else 2,
        "steps": quick.get("steps", 20 if cuda else 3),
        "warmup": quick.get("warmup", 5 if cuda else 1),
        "grid": quick.get("grid", "96x120x86"),
        "width": quick.get("width", 1.0),
        "blocks": quick.get("blocks", [5, 10, 5]),
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch", "steps", "threads"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    args.grid = list(parse_grid(args.grid))
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every (variant, mode) row in a fresh process; print the table."""
    args = parse_args(argv)
    if args.row:
        print(ROW_TAG + json.dumps(measure_row(json.loads(args.row))), flush=True)
        return 0
    dev = resolve_device(args.device)
    spec = {
        "device": str(dev),
        "grid": args.grid,
        "width": args.width,
        "blocks": args.blocks,
        "head": args.head,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "amp": args.amp,
        "amp_dtype": args.amp_dtype,
    }
    load_before = os.getloadavg()[0]
    grid = " x ".join(map(str, [IN_CHANNELS, *args.grid]))
    model = (
        f"inception_resnet_v2 width {args.width:g}, blocks {'/'.join(map(str, args.blocks))}"
        if args.head == "full"
        else f"inception_resnet_v2 width {args.width:g}, head transfer (stem + transfer head)"
    )
    print(
        f"{model}: {_n_params(spec):,} parameters; device {device_name(dev)}; torch "
        f"{torch.__version__}; threads {args.threads}; batch {args.batch}; grid {grid}; "
        f"{args.warmup} warm-up + {args.steps} timed steps{' (--quick)' if args.quick else ''}"
    )
    modes = ["train", "inference"] if args.inference else ["train"]
    results: dict[tuple[str, str], dict] = {}
    for label, channels_last, compiled in variants(dev, args):
        for mode in modes:
            row = {**spec, "mode": mode, "channels_last": channels_last, "compile": compiled}
            results[label, mode] = run_row(__file__, row)
    memory = "peak CUDA allocated" if dev.type == "cuda" else "peak RSS"
    print(f"\nload average before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    print(
        f"\n| variant | mode | vol/s | s/step | vs {variants(dev, args)[0][0]} | {memory} (MiB) "
        "| growth over steps (MiB) | warm-up (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    reference = variants(dev, args)[0][0]
    for (label, mode), r in results.items():
        if "error" in r:
            print(f"| {label} | {mode} | failed: {r['error']} | | | | | |")
            continue
        ref = results.get((reference, mode), {})
        ratio = f"{r['vol_s'] / ref['vol_s']:.2f}x" if "vol_s" in ref else "-"
        print(
            f"| {label} | {mode} | {r['vol_s']:.3g} | {r['s_step']:.3g} | {ratio} "
            f"| {r['peak_mib']:.0f} | {r['growth_mib']:.0f} | {r['warmup_s']:.1f} |"
        )
    per_fold = round(args.samples * args.train_fraction)
    print()
    for (label, mode), r in results.items():
        if mode != "train" or "error" in r:
            continue
        epoch = args.samples / r["vol_s"]
        schedule = args.folds * args.epochs * per_fold / r["vol_s"]
        print(
            f"- {label}: one epoch of {args.samples:,} volumes: {_hours(epoch)} on this device; "
            f"{args.folds} folds x {args.epochs} epoch(s) of {per_fold:,} training volumes "
            f"({args.train_fraction:g} of them): {_hours(schedule)}"
        )
    return 1 if "error" in results[reference, "train"] else 0


if __name__ == "__main__":
    sys.exit(main())
