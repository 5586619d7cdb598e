"""``brainmaps baseline RUN --models svm,lr,knn,xgb [--features TABLE]``: classical baselines.

On a regression (brain-age) run: ``--models svm,ridge,svr,gpr --features VOLUMES``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from brainmaps.baselines.compare import format_comparison
from brainmaps.baselines.run import ALL_MODELS, run_baselines
from brainmaps.baselines.tabular import REGRESSION_MODELS
from brainmaps.cli._args import add_progress_flag


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "baseline",
        help="voxel SVM and morphometry LR/KNN/XGBoost on the folds of a run, vs the CNN",
        description="Cross-validate classical baselines on exactly the folds of a trained "
        "run (nested grid search in every training fold) and compare them with the CNN: "
        "accuracy mean ± std, balanced accuracy, AUC and a corrected resampled t-test "
        "(regression: MAE, RMSE, r, R², and the MAE and gap-target correlation after the "
        "age-bias correction, fitted per fold on the run's validation subjects as for the "
        "CNN). Writes RUN/baselines/{metrics,predictions,params,comparison}.tsv and "
        "importance tables and plots for lr/ridge and xgb.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument(
        "--models",
        help=f"comma-separated, from {','.join(ALL_MODELS)} (default: svm, plus lr,knn,xgb "
        f"when --features is given). Regression runs: svm and svm_linear are voxel SVRs, and "
        f"{','.join(REGRESSION_MODELS)} are regression-only table models (RBF/linear SVR, "
        "Gaussian process), e.g. --models svm,ridge,svr,gpr",
    )
    p.add_argument(
        "--features",
        help="TSV/CSV of morphometric features with a subject column (FreeSurfer, DLMUSE, "
        "or 'brainmaps morphometry' output); needed by every model but svm and svm_linear",
    )
    p.add_argument("--n-jobs", type=int, default=1, help="parallel grid-search fits (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of inner folds and XGBoost")
    p.add_argument("--inner-folds", type=int, default=5, help="inner grid-search folds (5)")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps baseline``."""
    models = args.models
    if models is None:
        models = "svm,lr,knn,xgb" if args.features else "svm"
    table = run_baselines(
        args.run_dir,
        models=models,
        features=args.features,
        n_jobs=args.n_jobs,
        random_state=args.seed,
        progress=not args.no_progress,
        inner_folds=args.inner_folds,
    )
    print(format_comparison(table))
    print(f"baselines written to {Path(args.run_dir) / 'baselines'}")
    return 0
