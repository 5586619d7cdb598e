"""``brainmaps sanity RUN``: do the maps change when the models' weights, or the labels they
were trained on, are randomised?"""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.sanity import SPEARMAN_BOUND
from brainmaps.cli._args import add_folds_subset_flag, add_progress_flag, folds_subset
from brainmaps.cli.faithfulness import split_methods
from brainmaps.exceptions import ConfigError
from brainmaps.run.layout import RunLayout
from brainmaps.steps.sanity import DATA_FOLDS, SLOW_METHODS, SUBJECTS_PER_FOLD, sanity_run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "sanity",
        help="model-parameter randomisation check of each method's maps (Adebayo et al.)",
        description="For each fold model and a class-balanced sample of its test subjects, "
        "compute every method's map, then re-initialise the model's layers from the output "
        "down to the input, one more at a time, and compute the maps again (Adebayo et al. "
        "2018, 'Sanity checks for saliency maps'). Scores each randomised map against the "
        "trained model's map inside the brain (Spearman of |values| and of signed values, "
        "SSIM); a method fails when the median |Spearman| after every layer is random stays "
        f"above {SPEARMAN_BOUND}. With --data-randomisation, also retrain the model of "
        "chosen folds from scratch on permuted training labels and score its maps the same "
        "way (the data randomisation test; trains one model per fold). Writes "
        "RUN/analysis/sanity.tsv and sanity_summary.tsv.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument(
        "--methods",
        help="comma-separated methods (default: all with maps except the slow "
        f"{', '.join(SLOW_METHODS)}); each uses the options its maps were made with",
    )
    p.add_argument(
        "--subjects-per-fold", type=int, default=SUBJECTS_PER_FOLD,
        help=f"test subjects per fold, classes in turn ({SUBJECTS_PER_FOLD})",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0,
        help="seed of the sample, the random weights and the label permutation (0)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=4, help="subjects per method call (4)")
    p.add_argument(
        "--data-randomisation", action="store_true",
        help="also retrain fold models on permuted labels and compare their maps (trains)",
    )  # fmt: skip
    add_folds_subset_flag(p, ",".join(map(str, DATA_FOLDS)), when="with --data-randomisation")
    p.add_argument(
        "--epochs", type=int,
        help="with --data-randomisation: epochs of each permuted-label model (the run's)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps sanity``."""
    given = [f for f, v in (("--folds-subset", args.folds_subset), ("--epochs", args.epochs))
             if v is not None]  # fmt: skip
    if given and not args.data_randomisation:
        raise ConfigError(
            f"{' and '.join(given)} choose the models trained on permuted labels; add "
            "--data-randomisation, or drop them."
        )
    out = sanity_run(
        args.run_dir,
        split_methods(args.methods),
        subjects_per_fold=args.subjects_per_fold,
        random_state=args.seed,
        batch_size=args.batch_size,
        data_randomisation=args.data_randomisation,
        folds=folds_subset(args),
        epochs=args.epochs,
        device=args.device,
        progress=not args.no_progress,
    )
    summary = pd.read_csv(RunLayout(args.run_dir).analysis("sanity_summary"), sep="\t")
    summary = summary.dropna(axis="columns", how="all")  # no data randomisation: no columns
    summary["passed"] = summary["passed"].map({True: "pass", False: "FAIL"})
    if "data_passed" in summary:
        summary["data_passed"] = summary["data_passed"].map({True: "pass", False: "FAIL"})
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"sanity checks written to {out}")
    return 0
