"""Small helpers shared by several subpackages: atomic writes and hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "stable_hash", "write_tsv"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path that is renamed onto ``path`` only on success.

    The temporary file lives in the destination folder, so the final ``os.replace``
    is atomic: readers see either the old file or the complete new one, never a
    half-written file. On an exception the temporary file is removed and ``path`` is
    left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination. Its parent folder is created if missing.
    suffix : str, optional
        Suffix of the temporary file (e.g. ``".nii.gz"`` so that writers which infer
        the format from the name behave). Defaults to the destination's suffixes.

    Yields
    ------
    pathlib.Path
        Where the caller must write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_tsv(table: Any, path: str | os.PathLike, float_format: str | None = "%.6g") -> Path:
    """Write a pandas DataFrame as a tab-separated file, atomically, without its index.

    Parameters
    ----------
    table : pandas.DataFrame
        The table to write.
    path : str or os.PathLike
        Destination; its folder is created if missing.
    float_format : str or None
        ``printf``-style format of floats (``None`` writes them at full precision).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format=float_format)
    return Path(path)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Return a short SHA-256 hex digest of a JSON-serialisable object.

    Keys are sorted, so equal dictionaries give equal hashes across runs and machines.
    """
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]
