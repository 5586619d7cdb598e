"""The CNN against the voxel SVM and LR on region volumes, on real scans, on identical folds.

Issue 12's measurement: on ``../shared/data/ixi-100`` (100 IXI-HH T1 scans, 50 F / 50 M)
after ``brainmaps preprocess``, each training *protocol* of the CNN (a named set of
``brainmaps train`` flags: the old defaults, the current defaults, any set given with
``--protocol``) is cross-validated on ``--repeats`` differently seeded, stratified
``--folds``-fold splits of the sex target, and the RBF SVM on the same voxels and
logistic regression on the DLMUSE region volumes are cross-validated on exactly the same
splits (``brainmaps baseline``). Every protocol sees the same folds file per repeat, so
the comparison is paired fold by fold.

Printed (Markdown, paste into the README): per model, accuracy and ROC AUC mean ± std
over all repeats x folds, the range of fold accuracies, the corrected repeated k-fold
t-test against the voxel SVM (Bouckaert & Frank 2004: the corrected resampled t-test of
Nadeau & Bengio on the J = repeats x folds paired differences, J - 1 degrees of
freedom), the fraction of folds where the model beats the SVM (ties count half), and the
wall time of each model's cross-validation. With ``--sizes 50,75`` the same is repeated
on stratified subsets of the cohort (a learning curve; the subsets are nested).

Each CNN and baseline call runs as its own ``brainmaps`` process, exactly as a user
would type it (the commands are printed); finished runs are reused when the script is
run again with the same ``--work`` folder, so an interrupted benchmark resumes.

Usage::

    python benchmarks/real_data.py --prep PREP --volumes ROI_VOLUMES.tsv
        [--work bench-real] [--grid 36x44x36] [--folds 5] [--repeats 2]
        [--protocols old,default] [--protocol NAME="--flag value ..."]
        [--sizes 50,75] [--threads 2]
    python benchmarks/real_data.py --quick      # a synthetic cohort, seconds: checks that it runs

``PREP`` is the output folder of ``brainmaps preprocess ../shared/data/ixi-100 --out PREP``;
``ROI_VOLUMES.tsv`` is ``../shared/data/ixi-100/derivatives/dlmuse/roi_volumes.tsv``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.baselines.compare import compare_models
from brainmaps.evaluation.splitters import make_folds

#: Named training protocols: ``brainmaps train`` flags beside the data, grid and folds
#: (add more with ``--protocol NAME="FLAGS"``). ``old`` is brainmaps 0.3's defaults spelled
#: out as issue 12 ran them (lr 3e-4, 20 epochs, batch 8, 10 % inner validation, the best
#: epoch by validation loss); ``default`` is whatever the installed version defaults to.
PROTOCOLS = {
    "old": "--lr 3e-4 --epochs 20 --batch-size 8 --val-fraction 0.1",
    "default": "",
}
BASELINES = ("svm", "lr")
REFERENCE = "svm"


def _run(command: list[str], log: Path, threads: int) -> float:
    """Run a brainmaps command, its output to ``log``; return its wall time (s)."""
    print("$", shlex.join(command), file=sys.stderr, flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    with open(log, "a") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"command failed ({done.returncode}); see {log}: {shlex.join(command)}")
    return time.perf_counter() - start


def _timed(command: list[str], done: Path, record: Path, work: Path, args) -> float:
    """Run ``command`` unless ``done`` exists; return its wall time (recorded in ``record``)."""
    if not done.is_file():
        seconds = _run(command, work / "log.txt", args.threads)
        record.write_text(f"{seconds:.1f}\n")
    return float(record.read_text()) if record.is_file() else float("nan")


def cohort_table(prep: Path, target: str, size: int | None, seed: int) -> pd.DataFrame:
    """Subjects of a preprocessed folder with their registered image and sex.

    ``size`` draws a sex-stratified subset; subsets of one seed are nested (each smaller
    one inside the larger), so a learning curve adds subjects rather than redraws them.
    """
    table = pd.read_csv(prep / "participants.tsv", sep="\t", dtype=str)
    table["subject"] = table["participant_id"].str.removeprefix("sub-")
    table["path"] = [
        next((prep / f"sub-{s}" / "anat").glob("*_T1w.nii.gz"), None) for s in table["subject"]
    ]
    table = table[table["path"].notna() & table[target].notna()].reset_index(drop=True)
    if size is None or size >= len(table):
        return table
    rng = np.random.default_rng(seed)
    rank = np.empty(len(table), dtype=float)
    for _, rows in table.groupby(target).groups.items():  # interleave the classes
        order = rng.permutation(len(rows))
        rank[np.asarray(rows)[order]] = (np.arange(len(rows)) + 0.5) / len(rows)
    return table.iloc[np.argsort(rank, kind="stable")[:size]].reset_index(drop=True)


def write_splits(table: pd.DataFrame, target: str, folds: int, repeats: int, work: Path):
    """One folds file per repeat (stratified by sex, seeds 0 .. repeats - 1)."""
    paths = []
    for r in range(repeats):
        fold = make_folds(table["subject"], table[target], n_folds=folds, seed=r)
        path = work / f"folds_repeat-{r}.tsv"
        pd.DataFrame({"subject": table["subject"], "fold": fold}).to_csv(
            path, sep="\t", index=False
        )
        paths.append(path)
    return paths


def _per_fold(table: pd.DataFrame, repeat: int) -> pd.DataFrame:
    rows = table[~table["fold"].astype(str).isin(("mean", "std"))].copy()
    rows["fold"] = f"{repeat}." + rows["fold"].astype(str)
    return rows


def run_size(args, table: pd.DataFrame, work: Path) -> tuple[pd.DataFrame, dict]:
    """Cross-validate every protocol and baseline on one cohort; return (table, walls)."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "cohort.tsv"
    table[["subject", "path", args.target]].to_csv(source, sep="\t", index=False)
    splits = write_splits(table, args.target, args.folds, args.repeats, work)
    per_fold, walls = {}, {}
    common = ["--target", args.target, "--subject-col", "subject", "--path-col", "path"]
    common += ["--grid", args.grid, "--brain-mask", "--no-progress"]
    for r, split in enumerate(splits):
        for name in args.protocols:
            run = work / f"cnn-{name}_repeat-{r}"
            command = [args.brainmaps, "train", str(source), "--out", str(run), *common]
            command += ["--folds-file", str(split), *shlex.split(args.flags[name])]
            wall = _timed(command, run / "metrics.tsv", run / "wall_seconds.txt", work, args)
            walls.setdefault(f"cnn ({name})", []).append(wall)
            metrics = pd.read_csv(run / "metrics.tsv", sep="\t", dtype={"fold": str})
            per_fold.setdefault(f"cnn ({name})", []).append(_per_fold(metrics, r))
        run = work / f"cnn-{args.protocols[0]}_repeat-{r}"  # baselines: same folds, any run
        done = run / "baselines" / "metrics.tsv"
        command = [args.brainmaps, "baseline", str(run), "--models", ",".join(BASELINES)]
        command += ["--features", str(args.volumes), "--no-progress"]
        wall = _timed(command, done, run / "baselines_wall_seconds.txt", work, args)
        walls.setdefault("baselines", []).append(wall)
        metrics = pd.read_csv(done, sep="\t", dtype={"fold": str, "model": str})
        for model, part in metrics.groupby("model"):
            per_fold.setdefault(str(model), []).append(_per_fold(part.drop(columns="model"), r))
    pooled = {m: pd.concat(parts, ignore_index=True) for m, parts in per_fold.items()}
    n = len(table)
    n_test = n / args.folds
    summary = compare_models(
        pooled, n_train=n - n_test, n_test=n_test, task="classification", reference=REFERENCE
    )
    ref = pooled[REFERENCE].set_index("fold")["accuracy"].astype(float)
    wins, spans = [], []
    for model in summary["model"]:
        acc = pooled[model].set_index("fold")["accuracy"].astype(float)
        diff = acc - ref.loc[acc.index]
        wins.append(float(((diff > 0) + 0.5 * (diff == 0)).mean()))
        spans.append(f"{acc.min():.2f}-{acc.max():.2f}")
    summary = summary.assign(win_vs_svm=wins, fold_range=spans)
    return summary, {k: float(np.sum(v)) for k, v in walls.items()}


def markdown(summary: pd.DataFrame, walls: dict, n: int, args) -> str:
    lines = [
        f"n = {n} scans, {args.repeats} x {args.folds}-fold CV at {args.grid}, "
        f"target {args.target}",
        "",
        "| model | accuracy | AUC | fold accuracies | t vs SVM (p) | folds won vs SVM |"
        " wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        test = "" if row.model == REFERENCE else f"{row.t:+.2f} ({row.p:.2f})"
        won = "" if row.model == REFERENCE else f"{row.win_vs_svm:.2f}"
        wall = walls.get(row.model, walls.get("baselines") if row.model in BASELINES else None)
        wall_text = "" if wall is None else f"{wall:.0f}"
        if row.model in BASELINES and wall is not None:
            wall_text += " (all baselines)"
        lines.append(
            f"| {row.model} | {row.accuracy_mean:.3f} ± {row.accuracy_std:.3f} | "
            f"{row.roc_auc_mean:.3f} ± {row.roc_auc_std:.3f} | {row.fold_range} | {test} | {won} | "
            f"{wall_text} |"
        )
    return "\n".join(lines)


def _quick(args) -> None:
    """A tiny synthetic cohort (target ``group``) in place of ixi-100, one short protocol."""
    work = Path(args.work)
    prep = work / "synthetic"
    if not (prep / "participants.tsv").is_file():
        command = [args.brainmaps, "synth", str(prep), "--subjects", "24", "--voxel-size", "8"]
        _run([*command, "--no-progress"], work / "log.txt", args.threads)
    table = pd.read_csv(prep / "participants.tsv", sep="\t", dtype=str)
    volumes = work / "volumes.tsv"
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "participant_id": table["participant_id"],
            "region_a": rng.normal(size=len(table)) + (table["group"] == "control"),
            "region_b": rng.normal(size=len(table)),
        }
    ).to_csv(volumes, sep="\t", index=False)
    args.prep, args.volumes, args.target = prep, volumes, "group"
    args.grid, args.folds, args.repeats = "22x26x22", 3, 2
    args.protocols = ["quick"]
    args.flags = {"quick": "--epochs 2"}
    args.sizes = []


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prep", type=Path, help="output folder of brainmaps preprocess")
    parser.add_argument("--volumes", type=Path, help="region volumes (DLMUSE roi_volumes.tsv)")
    parser.add_argument("--work", default="bench-real", help="folder for runs and tables")
    parser.add_argument("--target", default="sex")
    parser.add_argument("--grid", default="36x44x36")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--protocols", default="old,default")
    parser.add_argument(
        "--protocol", action="append", default=[], metavar='NAME="FLAGS"',
        help="define or redefine a protocol by its train flags",
    )  # fmt: skip
    parser.add_argument("--sizes", default="", help="subset sizes for a learning curve")
    parser.add_argument("--seed", type=int, default=0, help="seeds the subsets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    args.brainmaps = str(Path(sys.executable).with_name("brainmaps"))
    args.flags = dict(PROTOCOLS)
    for item in args.protocol:
        name, _, flags = item.partition("=")
        args.flags[name.strip()] = flags
    args.protocols = [p for p in args.protocols.split(",") if p]
    unknown = [p for p in args.protocols if p not in args.flags]
    if unknown:
        parser.error(f"unknown protocol(s) {unknown}; known: {sorted(args.flags)}")
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        Path(args.work).mkdir(parents=True, exist_ok=True)
        _quick(args)
    elif args.prep is None or args.volumes is None:
        parser.error("--prep and --volumes are required (or --quick)")
    full = cohort_table(Path(args.prep), args.target, None, args.seed)
    for size in [*args.sizes, None]:
        table = (
            full if size is None else cohort_table(Path(args.prep), args.target, size, args.seed)
        )
        work = Path(args.work) / f"n-{len(table)}"
        summary, walls = run_size(args, table, work)
        summary.to_csv(work / "summary.tsv", sep="\t", index=False)
        print(markdown(summary, walls, len(table), args), "\n", flush=True)


if __name__ == "__main__":
    main()
