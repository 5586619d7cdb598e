"""Per-subject time, peak memory and localisation of every attribution method.

Measures, in one run on this machine:

1. seconds per subject and peak resident memory (RSS) of each registered method on
   xin2019 (32/64/128 channels) at the model grid (default 58x70x58, the paper's), with
   the methods' default settings, each method in a fresh process (so one method's peak
   does not hide another's). Inputs are synthetic T1 volumes preprocessed to the grid;
   the weights are random (timing does not depend on training, except for the
   iterations Meaningful Perturbations needs to converge);
2. localisation on a trained run (default ``demo/run``, made by ``make demo``): the ROC
   AUC of the patient class-mean map (absolute values) inside vs outside the planted
   ground-truth mask, within the brain, over the test subjects of the first fold(s),
   each explained by its out-of-fold model. 0.5 is chance.

The paper reports about a minute per subject for Grad-CAM, several minutes for guided
backpropagation and several hours for Meaningful Perturbations (Kan et al. 2020).

Usage::

    python benchmarks/attribution.py [--grid 58x70x58] [--subjects 2] [--methods all]
                                     [--run demo/run] [--folds 1] [--quick]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from brainmaps.attribution import create_method, list_methods

PAPER = {
    "grad_cam": "~1 min",
    "guided_backprop": "several min",
    "meaningful_perturbation": "several hours",
}


def _volumes(grid: tuple[int, int, int], n: int) -> torch.Tensor:
    from brainmaps.data.preprocess import PreprocessConfig, preprocess_img
    from brainmaps.data.synthetic import make_synthetic_cohort

    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_cohort(Path(tmp) / "c", n_subjects=max(n, 2), seed=0, progress=False)
        paths = sorted((Path(tmp) / "c").glob("sub-*/anat/*_T1w.nii.gz"))[:n]
        config = PreprocessConfig(grid_shape=grid)
        return torch.from_numpy(np.stack([preprocess_img(p, config) for p in paths]))[:, None]


def measure_one(method: str, grid: tuple[int, int, int], n: int, model_name: str) -> dict:
    """Time one method in this process (called in a fresh subprocess)."""
    from brainmaps.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, input_shape=grid).eval()
    x = _volumes(grid, n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    maps = create_method(method, model).attribute(x, target=1)
    seconds = (time.perf_counter() - start) / n
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert torch.isfinite(maps).all()
    return {"seconds": seconds, "peak_mib": peak, "extra_mib": max(peak - before, 0.0)}


def _in_subprocess(method: str, grid, n: int, model_name: str) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); import attribution as b; "
        f"print(json.dumps(b.measure_one({method!r}, {tuple(grid)!r}, {n}, {model_name!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def localisation(run_dir: Path, methods: list[str], n_folds: int) -> dict[str, float]:
    """ROC AUC of each method's patient class-mean map against the planted mask."""
    from sklearn.metrics import roc_auc_score

    from brainmaps.data.io import load_img
    from brainmaps.data.preprocess import mni_brain_mask, resample_to_grid
    from brainmaps.models.checkpoints import model_from_checkpoint
    from brainmaps.run.folder import open_run

    run = open_run(run_dir)
    source = Path(run.config.data.source)
    truth = resample_to_grid(load_img(source / "ground_truth_mask.nii.gz"), run.grid, 0) > 0.5
    brain = mni_brain_mask(run.grid)
    volumes = run.volumes()
    sums = {m: np.zeros(run.grid.shape) for m in methods}
    count = 0
    for k in range(n_folds):
        model, _ = model_from_checkpoint(run.checkpoints()[k])
        idx = [i for i in run.indices(k) if run.table["label"].iloc[i] == "patient"]
        x = torch.from_numpy(np.stack([volumes[i] for i in idx]))[:, None]
        for m in methods:
            sums[m] += np.abs(create_method(m, model).attribute(x, target=1).numpy()).sum(0)
        count += len(idx)
    return {m: float(roc_auc_score(truth[brain], sums[m][brain] / count)) for m in methods}


def main(argv=None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="58x70x58")
    parser.add_argument("--subjects", type=int, default=2, help="subjects per timed call")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--run", default="demo/run", help="trained run for localisation")
    parser.add_argument("--folds", type=int, default=1, help="folds used for localisation")
    parser.add_argument("--quick", action="store_true", help="small grid, no localisation")
    args = parser.parse_args(argv)
    from brainmaps.data.preprocess import parse_grid

    grid = parse_grid("22x26x22" if args.quick else args.grid)
    methods = list_methods() if args.methods == "all" else args.methods.split(",")
    torch.set_num_threads(2)
    rows = {}
    for m in methods:
        model_name = "gap_cnn" if m == "cam" else "xin2019"
        rows[m] = _in_subprocess(m, grid, args.subjects, model_name)
        print(f"{m}: {rows[m]}", file=sys.stderr)
    run = Path(args.run)
    loc = {}
    if not args.quick and (run / "config.yaml").is_file():
        loc = localisation(run, [m for m in methods if m != "cam"], args.folds)
    grid_text = "x".join(map(str, grid))
    print(
        f"\n| method | s/subject at {grid_text} (CPU, {torch.get_num_threads()} threads) "
        "| peak RSS MiB | added by the method MiB | localisation AUC | paper |"
    )
    print("|---|---|---|---|---|---|")
    for m, r in rows.items():
        if "error" in r:
            print(f"| {m} | error: {r['error']} | | | | |")
            continue
        auc = f"{loc[m]:.3f}" if m in loc else "n/a"
        print(
            f"| {m} | {r['seconds']:.2f} | {r['peak_mib']:.0f} | {r['extra_mib']:.0f} | {auc} "
            f"| {PAPER.get(m, '')} |"
        )


if __name__ == "__main__":
    main()
