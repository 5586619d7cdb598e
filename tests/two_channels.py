"""A two-channel cohort for the channel tests (imported as ``from two_channels import ...``).

Channel ``gm`` is a tiny synthetic cohort's T1w image; channel ``wm`` is its
intensity-inverted copy inside the head (``max - value`` where the image is non-zero),
so the two channels differ but carry the same planted effect.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

#: The channel names of :func:`write_two_channel_table` (from its path columns).
CHANNELS = ("gm", "wm")


def invert(src: Path, dst: Path) -> Path:
    """Write ``src`` intensity-inverted inside its non-zero voxels to ``dst``."""
    img = nib.load(src)
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = np.where(data > 0, data.max() - data, 0).astype(np.float32)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(out, img.affine, img.header), dst)
    return dst


def write_two_channel_table(bids: Path, out: Path, n_subjects: int | None = 16) -> Path:
    """A table ``cohort.tsv`` in ``out`` with ``path_gm`` (the T1w) and ``path_wm`` (inverted).

    ``n_subjects`` takes that many participants, the classes in turn (``None``: all).
    """
    participants = pd.read_csv(bids / "participants.tsv", sep="\t", dtype=str)
    if n_subjects is not None:
        rank = participants.groupby("group").cumcount()
        participants = participants.loc[rank.sort_values(kind="stable").index[:n_subjects]]
    rows = []
    for row in participants.to_dict("records"):
        sub = row["participant_id"]
        t1 = bids / sub / "anat" / f"{sub}_T1w.nii.gz"
        wm = invert(t1, out / "wm" / f"{sub}_wm.nii.gz")
        subject = sub.removeprefix("sub-")
        rows.append({"subject": subject, "group": row["group"], "path_gm": t1, "path_wm": wm})
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "cohort.tsv", sep="\t", index=False)
    return out / "cohort.tsv"


def two_channel_config(table: Path, out: Path, cache: Path):
    """A 2-fold, 1-epoch tiny RunConfig on the two-channel table."""
    from dataclasses import replace

    from tiny import tiny_config

    config = tiny_config(table, out, cache, folds=2, epochs=1)
    return config.replace(data=replace(config.data, path_col="path_gm,path_wm"))
