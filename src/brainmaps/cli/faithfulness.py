"""``brainmaps faithfulness RUN``: deletion and insertion curves of a run's maps."""

from __future__ import annotations

import argparse

import pandas as pd

from brainmaps.analysis.faithfulness import FILLS
from brainmaps.cli._args import add_progress_flag
from brainmaps.steps.faithfulness import faithfulness_run
from brainmaps.validation import parse_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "faithfulness",
        help="deletion/insertion curves of each method's maps against a random ranking",
        description="Rank each subject's brain voxels by its own map, remove (deletion) or "
        "put back (insertion) the top-k %% step by step, and follow the probability of the "
        "explained class under the fold model that did not train on the subject (Petsiuk "
        "et al. 2018; Samek et al. 2017). Lower deletion AUC and higher insertion AUC are "
        "more faithful; a random ranking is the control. Writes "
        "RUN/analysis/faithfulness.tsv and faithfulness_curves.tsv.",
    )
    p.add_argument("run_dir", help="run folder with maps ('brainmaps explain' first)")
    p.add_argument("--methods", help="comma-separated map folders (default: all with maps)")
    p.add_argument(
        "--n-subjects", type=int, help="score a seeded random subset (default: everyone)"
    )
    p.add_argument("--fill", default="blur", choices=FILLS, help="what removed voxels become")
    p.add_argument("--steps", type=int, default=20, help="curve steps (20: every 5 %%)")
    p.add_argument("--sigma-mm", type=float, default=8.0, help="blur of the fill in mm (8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and random maps")
    p.add_argument("--batch-size", type=int, default=32, help="volumes per forward pass")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    add_progress_flag(p)
    p.set_defaults(run=run)


def split_methods(text: str | None) -> list[str] | None:
    """Split a comma-separated ``--methods`` value (``None`` stays ``None``)."""
    return parse_list(text, "--methods", example="grad_cam,gradient")


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps faithfulness``."""
    path = faithfulness_run(
        args.run_dir,
        split_methods(args.methods),
        n_subjects=args.n_subjects,
        fill=args.fill,
        steps=args.steps,
        sigma_mm=args.sigma_mm,
        random_state=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    table = pd.read_csv(path, sep="\t")
    wide = table.pivot(index="method", columns="mode", values="auc")
    print("AUC (deletion: lower is better; insertion: higher is better)")
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"faithfulness written to {path}")
    return 0
