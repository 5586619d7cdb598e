"""Occlusion speed against Captum, and identity of the maps.

Measures, in one run on this machine (``torch.set_num_threads(--threads)``):

1. seconds per subject for xin2019 (channels 32/64/128, random weights) at the paper's
   58x70x58 grid, an 18 mm cube moved by 9 mm (6 and 3 voxels, 8303 positions), zero
   fill: Captum's ``Occlusion`` (one occluded copy per forward pass, its default, and
   64 per pass), brainmaps with whole-copy batches (``incremental=False``) and
   brainmaps' default (incremental inference). Captum and the whole-copy runs are timed
   on the first ``--sample`` window positions and extrapolated linearly to all of them
   (marked "extrapolated"; ``--captum-full`` runs Captum's default in full instead);
   brainmaps' default always runs in full.
2. the largest absolute difference between brainmaps' and Captum's maps (both fills,
   target = predicted class, Captum run in full on the wrapped ``softmax(model)``) on a
   smaller grid: the trained demo model at 36x44x36 (``demo/run``, fold 0, first test
   subject) when it exists, else a random xin2019.

Usage::

    python benchmarks/occlusion.py [--quick] [--threads 2] [--sample 64] [--captum-full]

Prints Markdown tables (with the load average before and after).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from brainmaps.attribution.occlusion import Occlusion, fill_values, window_grid
from brainmaps.models import create_model

REPO = Path(__file__).resolve().parents[1]
WINDOW_MM, STRIDE_MM = 18.0, 9.0  # the settings (--quick: 3 and 2 voxels at 8 mm)


class _Enough(Exception):
    """Raised inside a forward function to stop Captum after the sampled windows."""


def captum_seconds(model, x, grid, fill, per_eval: int, sample: int | None) -> tuple[float, str]:
    """Captum's time for one subject: in full, or on ``sample`` windows, extrapolated."""
    from captum.attr import Occlusion as CaptumOcclusion

    calls = {"n": 0, "t0": 0.0}
    n_windows = len(grid.boxes())
    n_calls = -(-n_windows // per_eval)

    warm = 2  # the unoccluded pass and one occluded pass are not timed when sampling

    def forward(z):
        calls["n"] += 1
        if calls["n"] == warm + 1:
            calls["t0"] = time.perf_counter()
        if sample is not None and calls["n"] > warm + -(-sample // per_eval):
            raise _Enough
        return torch.softmax(model(z), 1)

    start = time.perf_counter()
    try:
        _captum_map(CaptumOcclusion(forward), x, grid, fill, per_eval)
    except _Enough:
        timed = calls["n"] - 1 - warm
        per_call = (time.perf_counter() - calls["t0"]) / timed
        return per_call * n_calls, f"extrapolated from {timed} passes"
    return time.perf_counter() - start, "full run"


def _captum_map(occlusion, x, grid, fill, per_eval, target=0):
    with torch.no_grad():
        return occlusion.attribute(
            x,
            sliding_window_shapes=(x.shape[1], *grid.window),
            strides=(1, *grid.stride),
            baselines=fill_values(x, fill).view(1, -1, 1, 1, 1),
            target=target,
            perturbations_per_eval=per_eval,
        )[0, 0]


def ours_seconds(model, x, grid, incremental: bool, sample: int | None) -> tuple[float, str]:
    """brainmaps' time for one subject (whole-copy runs may be sampled and extrapolated)."""
    mm = {"window_mm": WINDOW_MM, "stride_mm": STRIDE_MM}
    method = Occlusion(model, incremental=incremental, **mm)
    if sample is None:
        start = time.perf_counter()
        method.attribute(x)
        return time.perf_counter() - start, "full run"
    from brainmaps.attribution._incremental import OcclusionEngine

    boxes = grid.boxes()
    engine = OcclusionEngine(model, x, boxes[:sample], incremental=incremental)
    start = time.perf_counter()
    engine.outputs(x, fill_values(x, "zero"))
    elapsed = time.perf_counter() - start
    return elapsed * len(boxes) / sample, f"extrapolated from {sample} windows"


def speed_table(args) -> list[str]:
    shape = (22, 26, 22) if args.quick else (58, 70, 58)
    channels = [8, 16, 32] if args.quick else [32, 64, 128]
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=shape, channels=channels).eval()
    x = torch.randn(1, 1, *shape)
    grid = window_grid(shape, WINDOW_MM, STRIDE_MM)
    sample = 16 if args.quick else args.sample
    rows = []
    captum_full = None if args.captum_full else sample
    ref, how = captum_seconds(model, x, grid, "zero", 1, captum_full)
    rows.append(("Captum Occlusion (1 copy per pass)", ref, how))
    rows.append(("Captum Occlusion (64 copies per pass)",
                 *captum_seconds(model, x, grid, "zero", 64, max(sample, 128))))  # fmt: skip
    rows.append(
        (
            "brainmaps, whole copies (incremental=False)",
            *ours_seconds(model, x, grid, False, sample),
        )
    )
    rows.append(
        ("brainmaps Occlusion (default, incremental)", *ours_seconds(model, x, grid, True, None))
    )
    lines = [
        f"xin2019 {'/'.join(map(str, channels))} at {'x'.join(map(str, shape))}, "
        f"{grid.window[0]}-voxel cube ({WINDOW_MM:g} mm), stride {grid.stride[0]} "
        f"({STRIDE_MM:g} mm), zero fill, "
        f"{len(grid.boxes())} positions, {torch.get_num_threads()} threads",
        "",
        "| method | s / subject | speed-up vs Captum | how |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {name} | {sec:.1f} | {ref / sec:.1f}x | {how} |" for name, sec, how in rows]
    return lines


def identity_model(quick: bool):
    """The trained demo model and a test subject at 36x44x36, or a random xin2019."""
    run_dir = REPO / "demo" / "run"
    if not quick and (run_dir / "cohort.tsv").is_file():
        from brainmaps.models.checkpoints import model_from_checkpoint
        from brainmaps.run.folder import open_run

        run = open_run(run_dir)
        model, _ = model_from_checkpoint(run.checkpoints()[0])
        volume = run.volumes()[int(run.indices(0, "test")[0])]
        return model.eval(), torch.as_tensor(volume)[None, None].float(), "demo/run fold 0"
    shape = (22, 26, 22)
    torch.manual_seed(1)
    model = create_model("xin2019", input_shape=shape, channels=[4, 8, 8]).eval()
    return model, torch.randn(1, 1, *shape), "random xin2019 4/8/8"


def identity_table(args) -> list[str]:
    from captum.attr import Occlusion as CaptumOcclusion

    model, x, source = identity_model(args.quick)
    grid = window_grid(x.shape[2:], WINDOW_MM, STRIDE_MM)
    lines = [
        f"Identity with Captum (run in full, 32 copies per pass): {source}, "
        f"{'x'.join(map(str, x.shape[2:]))}, cube {grid.window}, stride {grid.stride}",
        "",
        "| fill | max abs(Captum) | max abs diff | brainmaps s | Captum s |",
        "|---|---:|---:|---:|---:|",
    ]
    for fill in ("zero", "mean"):
        start = time.perf_counter()
        captum = CaptumOcclusion(lambda z: torch.softmax(model(z), 1))
        with torch.no_grad():
            target = int(model(x).argmax(1).item())
        theirs = _captum_map(captum, x, grid, fill, 32, target)
        t_captum = time.perf_counter() - start
        start = time.perf_counter()
        method = Occlusion(model, fill=fill, window_mm=WINDOW_MM, stride_mm=STRIDE_MM)
        ours = method.attribute(x, target=target)[0]
        t_ours = time.perf_counter() - start
        diff = (ours - theirs).abs().max().item()
        lines.append(
            f"| {fill} | {theirs.abs().max().item():.3g} | {diff:.2g} | {t_ours:.1f} | "
            f"{t_captum:.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid and model, seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample", type=int, default=64, help="windows timed when sampling")
    parser.add_argument("--captum-full", action="store_true", help="run Captum in full (~15 min)")
    args = parser.parse_args()
    if args.quick:
        global WINDOW_MM, STRIDE_MM
        WINDOW_MM, STRIDE_MM = 25.0, 16.6
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    lines = [*speed_table(args), "", *identity_table(args)]
    after = os.getloadavg()
    lines += ["", f"load average (1/5/15 min) before {load}, after {after}"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
