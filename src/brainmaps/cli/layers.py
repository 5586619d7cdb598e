"""``brainmaps layers RUN``: at which layer do class activation maps localise and stay
faithful?"""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.cli._args import add_progress_flag
from brainmaps.cli.faithfulness import split_methods
from brainmaps.steps.layers import DEFAULT_METHODS, layer_sweep
from brainmaps.validation import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "layers",
        help="sweep CAM-type methods over the layers: localisation and faithfulness per layer",
        description="For each fold model, each CAM-type method and each activation or "
        "pooling layer, explain the fold's test subjects and score the maps: ROC AUC of the "
        "conjoined class-mean map against the planted regions (synthetic cohorts), and "
        "deletion / insertion areas of a few subjects against a random ranking. Shows where "
        "a CAM's resolution stops being useful; nothing is written under maps/. Writes "
        "RUN/analysis/layers.tsv.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train'")
    p.add_argument(
        "--methods",
        help=f"comma-separated methods with a layer option ({','.join(DEFAULT_METHODS)})",
    )
    p.add_argument(
        "--layers", help="comma-separated module names (default: every activation and pooling)"
    )
    p.add_argument("--target", default="predicted", help="predicted, true or a class (predicted)")
    p.add_argument(
        "--subjects-per-fold", type=int,
        help="explain this many test subjects per fold, classes in turn (default: all)",
    )  # fmt: skip
    p.add_argument(
        "--faithfulness-subjects", type=int,
        help="subjects per fold with deletion/insertion curves (2, 0 on multi-channel runs; "
        "0: none)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random ranking (0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto)")
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps layers``."""
    out = layer_sweep(
        args.run_dir,
        split_methods(args.methods) or DEFAULT_METHODS,
        layers=parse_list(args.layers, "--layers", example="features.block2.relu"),
        target=args.target,
        subjects_per_fold=args.subjects_per_fold,
        faithfulness_subjects=args.faithfulness_subjects,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    table = pd.read_csv(out, sep="\t", dtype={"fold": str})
    pooled = table[table["fold"] == "all"].drop(columns=["fold", "depth"])
    print(pooled.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"layer sweep written to {out}")
    return 0
