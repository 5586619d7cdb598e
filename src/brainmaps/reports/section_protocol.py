"""Report blocks about how a run was validated: the CV scheme, per-site metrics, transfer.

BrainImageNet (Lu et al.) tested by leaving whole sites out and pre-trained on a sex model;
a reader of the report must see which scheme made the folds, how each test site fared,
and whether a transferred model could have seen the test subjects before.
"""

from __future__ import annotations

import pandas as pd

from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder

__all__ = ["protocol_facts", "site_blocks", "transfer_warning"]

_CV = {
    "stratified": "stratified by label, grouped by subject",
    "leave-sites-out": "leave sites out: whole sites per test fold",
    "leave-one-site-out": "leave one site out: one site per test fold",
    "file": "folds from a file",
}


def protocol_facts(run: RunFolder) -> list[tuple[str, str]]:
    """``(name, value)`` facts for the summary: the CV scheme and the transfer source."""
    training = run.config.training
    scheme = _CV.get(training.cv, training.cv)
    if training.cv == "file":
        scheme = f"folds from {training.folds_file}"
    sites = run.table["site"].astype(str) if "site" in run.table else pd.Series(dtype=str)
    if sites.replace("", pd.NA).nunique() > 1:
        per_site = run.table.assign(site=sites).groupby("site")["test_fold"].nunique()
        scheme += (
            "; every site in one test fold"
            if (per_site == 1).all()
            else "; sites are split across test folds (a site's scans are trained on and tested)"
        )
    facts = [("cross-validation", scheme)]
    if training.init_from:
        how = f"{training.transfer} layers" + (", stem frozen" if training.freeze == "stem" else "")
        facts.append(("initialised from", f"{training.init_from} ({how})"))
    return facts


def transfer_warning(run: RunFolder) -> str | None:
    """A warning when a transferred model's source may have trained on test subjects."""
    training = run.config.training
    if not training.init_from:
        return None
    from brainmaps.models.checkpoints import load_checkpoint

    overlaps, unchecked = {}, []
    for k, path in enumerate(run.checkpoints()):
        try:
            _, meta = load_checkpoint(path)
        except ConfigError:
            continue
        info = meta.get("transfer") or {}
        if info.get("overlap") is None:
            unchecked.append(k)
        elif info["overlap"]:
            overlaps[k] = info["overlap"]
    if overlaps:
        shown = ", ".join(f"fold {k}: {n}" for k, n in overlaps.items())
        return (
            f"The source model {training.init_from} was trained on subjects that are test "
            f"subjects here ({shown}; allowed by --allow-overlap): these folds' test metrics "
            "are optimistic."
        )
    if unchecked:
        return (
            f"The source {training.init_from} has no list of training subjects (a bare "
            "state_dict), so whether it saw this run's test subjects could not be checked."
        )
    return None


def site_blocks(run: RunFolder, table, block) -> list[dict]:
    """A per-site metrics table when the run has ``metrics_sites.tsv``."""
    path = run.layout.metrics_sites
    if not path.is_file():
        return []
    df = pd.read_csv(path, sep="\t", dtype={"fold": str, "site": str})
    keep = [c for c in ("fold", "site", "n_test", "accuracy", "balanced_accuracy", "roc_auc",
                        "sensitivity", "specificity", "mae", "r") if c in df]  # fmt: skip
    caption = "Out-of-fold test metrics per fold and test site"
    if run.config.training.cv in ("leave-sites-out", "leave-one-site-out"):
        caption += " (no site is in the training data of the fold that tests it)"
    return [table(df[keep], caption + ".")]
