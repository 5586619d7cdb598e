"""Several images per subject: channel names, their cohort columns, BIDS discovery.

A cohort has one *channel* per image of a subject: a table lists them as several path
columns (``path_col="path_gm,path_wm"``), a BIDS folder as several suffixes
(``suffix="GMD,GMV"``). One channel is the plain cohort of :func:`load_cohort
<brainmaps.data.cohort.load_cohort>`. With ``C > 1`` channels the cohort table keeps
``path`` (the first channel) and adds ``path_<name>`` for the others, a run's
``cohort.tsv`` adds ``cache_slot_<name>`` beside ``cache_slot``, and the volumes are read
as ``(C, X, Y, Z)`` float32 arrays (:class:`~brainmaps.data.stacked.StackedVolumes`).

A channel's name is the BIDS suffix, or the table column without a leading ``path_``
(columns ``path_gm,path_wm`` give channels ``gm`` and ``wm``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainmaps.data.labels import _examples
from brainmaps.exceptions import CohortError, ConfigError, ImageError

__all__ = [
    "SEPARATOR",
    "bids_images",
    "channel_columns",
    "channel_names",
    "check_channel_source",
    "check_paths",
    "column_channel",
    "discover_bids",
    "drop_incomplete",
    "merge_channel_images",
    "split_list",
]

#: Separates the channels of ``path_col`` / ``suffix`` (and of ``brainmaps predict``'s
#: per-subject paths).
SEPARATOR = ","
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def split_list(value: str | None) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; ``None`` -> ``()``; one item -> a 1-tuple.

    Unlike :func:`brainmaps.validation.parse_list`, empty and repeated items are kept
    (and refused by :func:`channel_names`): the number of channels is the model's input
    channel count, so ``"T1w,"`` or ``"gm,gm"`` must not silently become one channel.
    """
    if value is None:
        return ()
    return tuple(item.strip() for item in str(value).split(SEPARATOR))


def column_channel(column: str) -> str:
    """The channel name of a table column: the column without a leading ``path_``."""
    name = str(column)
    return name[5:] if name.startswith("path_") and len(name) > 5 else name


def _check_names(names: Sequence[str], param: str, given: str) -> tuple[str, ...]:
    """Several channel names: each non-empty, path-safe and unique."""
    names = tuple(names)
    bad = [n for n in names if not _SAFE.match(n)]
    if bad:
        raise ConfigError(
            f"{param}={given!r}: channel name(s) {', '.join(map(repr, bad))} are not usable "
            "in file names; each channel needs letters, digits, '_' or '-' (no empty items, "
            f"items separated by '{SEPARATOR}'). Rename them."
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"{param}={given!r} names channel(s) {', '.join(dup)} twice; each channel once."
        )
    return names


def channel_names(path_col: str | None, suffix: str | None) -> tuple[str, ...]:
    """The channel names a data configuration asks for; ``()`` for one channel.

    Parameters
    ----------
    path_col : str or None
        A table's image column(s), comma-separated (``"path_gm,path_wm"``).
    suffix : str or None
        A BIDS folder's image suffix(es), comma-separated (``"T1w,FLAIR"``).

    Returns
    -------
    tuple of str
        The names, in channel order, when one of them lists several channels.

    Raises
    ------
    ConfigError
        If both list several channels, or a name is empty, repeated or not path-safe.
    """
    columns, suffixes = split_list(path_col), split_list(suffix)
    if len(columns) > 1 and len(suffixes) > 1:
        raise ConfigError(
            f"path_col={path_col!r} and suffix={suffix!r} both list several channels; list "
            "them in path_col for a table or in suffix for a BIDS folder, not both."
        )
    if len(columns) > 1:
        _check_names(columns, "path_col", path_col)
        return _check_names([column_channel(c) for c in columns], "path_col", path_col)
    if len(suffixes) > 1:
        return _check_names(suffixes, "suffix", suffix)
    return ()


def check_channel_source(is_bids: bool, path_col: str | None, suffix: str | None) -> None:
    """Refuse a channel list that the kind of source ignores.

    Raises
    ------
    CohortError
        Several ``path_col`` columns for a BIDS folder, or several ``suffix`` values for
        a table.
    """
    if is_bids and len(split_list(path_col)) > 1:
        raise CohortError(
            f"path_col={path_col!r} lists table columns, but the source is a BIDS folder; "
            "give its channels as suffixes instead (suffix='T1w,FLAIR', CLI --suffix)."
        )
    if not is_bids and len(split_list(suffix)) > 1:
        raise CohortError(
            f"suffix={suffix!r} lists BIDS suffixes, but the source is a table; give its "
            "channels as path columns instead (path_col='path_gm,path_wm', CLI --path-col)."
        )


def channel_columns(channels: Sequence[str], prefix: str = "path") -> list[str]:
    """``[prefix, prefix_<name>, ...]``: the table column of each channel.

    The first channel keeps the one-channel column (``path``, ``cache_slot``); one
    channel (or none) gives ``[prefix]``.
    """
    names = list(channels)[1:]
    return [prefix, *(f"{prefix}_{name}" for name in names)]


def _internal(channels: Sequence[str]) -> list[str]:
    """The private frame columns of the channel paths while a cohort is read."""
    return ["_" + c for c in channel_columns(channels)]


def check_paths(frame: pd.DataFrame, internal: str, column: str, source) -> None:
    """Make the paths of ``frame[internal]`` absolute (relative to the table ``source``).

    Raises
    ------
    ImageError
        If a file does not exist (the first one, its line, subject and ``column`` are
        named).
    """
    folder = Path(source).parent.absolute()
    frame[internal] = [os.path.normpath(folder / os.path.expanduser(p)) for p in frame[internal]]
    exists = np.array([os.path.exists(p) for p in frame[internal]], dtype=bool)
    if not exists.all():
        bad = frame.loc[~exists].iloc[0]
        raise ImageError(
            f"image file {bad[internal]} (line {bad['_line']} of {source}, subject "
            f"{bad['_subject']!r}) does not exist; {int((~exists).sum())} of {len(frame)} "
            f"listed image(s) are missing. Paths are relative to {folder}; fix column "
            f"{column!r}."
        )


def _who(row) -> str:
    session = str(row.get("_session", "") or "")
    return str(row["_subject"]) + (f" ses-{session}" if session else "")


def drop_incomplete(frame, channels, source, drop_missing: bool, notes: list, fix: str):
    """Rows with an image for every channel; the others raise, or are dropped with a note.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``_subject`` (``_session``) and the channels' private path columns (``''`` or
        missing where a subject has no image).
    channels : sequence of str
    source : path-like
        Named in the message.
    drop_missing : bool
        Drop incomplete rows (a note is appended to ``notes``) instead of raising.
    notes : list of str
    fix : str
        How to complete the data, e.g. ``"fill in the table"``.
    """
    columns = _internal(channels)
    missing = np.column_stack([frame[c].fillna("").astype(str).eq("").to_numpy() for c in columns])
    bad = missing.any(axis=1)
    if not bad.any():
        return frame
    items = [
        f"{_who(row)} (no {', '.join(n for n, m in zip(channels, miss, strict=True) if m)})"
        for (_, row), miss in zip(frame.loc[bad].iterrows(), missing[bad], strict=True)
    ]
    message = (
        f"{int(bad.sum())} subject/session(s) of {source} lack the image of a channel: "
        f"{_examples(items)}"
    )
    if not drop_missing:
        raise CohortError(
            f"{message}. Every subject needs one image per channel ({', '.join(channels)}); "
            f"{fix}, or pass drop_missing=True (CLI --drop-missing) to drop them."
        )
    notes.append(f"dropped {message}.")
    kept = frame.loc[~bad].reset_index(drop=True)
    if kept.empty:
        raise CohortError(f"no subject of {source} has an image of every channel.")
    return kept


def merge_channel_images(
    found: dict[str, pd.DataFrame], source, drop_missing: bool, notes: list
) -> pd.DataFrame:
    """Join the images of each BIDS suffix into one row per subject/session.

    Parameters
    ----------
    found : dict of str to pandas.DataFrame
        ``{suffix: images}`` in channel order; each frame has ``_subject``, ``_session``,
        ``_path`` (one image per subject/session).
    source : path-like
        The BIDS folder (named in messages).
    drop_missing : bool
        Drop subject/sessions that lack a suffix (with a note) instead of raising.
    notes : list of str

    Returns
    -------
    pandas.DataFrame
        ``_subject``, ``_session``, ``_path`` (first channel), ``_path_<name>`` (others).
    """
    channels = list(found)
    merged = None
    for column, images in zip(_internal(channels), found.values(), strict=True):
        part = images.rename(columns={"_path": column})
        keys = ["_subject", "_session"]
        merged = part if merged is None else merged.merge(part, on=keys, how="outer")
    merged = merged.fillna("").reset_index(drop=True)
    fix = "add the missing images"
    return drop_incomplete(merged, channels, source, drop_missing, notes, fix)


def discover_bids(root: Path, suffix: str) -> pd.DataFrame:
    """Find ``sub-*/[ses-*/]<datatype>/sub-*_<suffix>.nii[.gz]``: one image per session."""
    found: dict[tuple[str, str], list[Path]] = {}
    ends = (f"_{suffix}.nii", f"_{suffix}.nii.gz")
    for sub_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        for file in sorted(sub_dir.glob("*/sub-*")) + sorted(sub_dir.glob("ses-*/*/sub-*")):
            if not file.name.endswith(ends) or file.parent.name.startswith("ses-"):
                continue
            in_session = file.parent.parent != sub_dir
            session = file.parent.parent.name.removeprefix("ses-") if in_session else ""
            found.setdefault((sub_dir.name[4:], session), []).append(file)
    multiple = {k: v for k, v in found.items() if len(v) > 1}
    if multiple:
        (sub, ses), files = next(iter(multiple.items()))
        raise CohortError(
            f"{len(multiple)} subject/session(s) of {root} have several *_{suffix} images, "
            f"e.g. sub-{sub}{f' ses-{ses}' if ses else ''}: {_examples(f.name for f in files)}. "
            "Choose one with --suffix (suffix=...) or list the images in a table."
        )
    rows = [(sub, ses, str(files[0])) for (sub, ses), files in found.items()]
    return pd.DataFrame(rows, columns=["_subject", "_session", "_path"], dtype=object)


def bids_images(root: Path, suffix: str, drop_missing: bool, notes: list):
    """The images of each channel of a BIDS folder, one row per subject/session.

    Parameters
    ----------
    root : pathlib.Path
        The BIDS folder.
    suffix : str
        One suffix, or several comma-separated (one channel each).
    drop_missing : bool
        Drop subject/sessions that lack a channel's image (with a note) instead of raising.
    notes : list of str

    Returns
    -------
    images : pandas.DataFrame
        ``_subject``, ``_session``, ``_path`` (and ``_path_<name>`` for the channels after
        the first).
    channels : tuple of str
        The suffixes.
    """
    channels = channel_names(None, suffix)
    if not channels:
        return discover_bids(root, suffix), (suffix,)
    found = {name: discover_bids(root, name) for name in channels}
    return merge_channel_images(found, root, drop_missing, notes), channels
