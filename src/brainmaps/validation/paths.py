"""Checks of output paths, made before any work so that nothing is left half-written."""

from __future__ import annotations

import os
from pathlib import Path

from brainmaps.exceptions import ConfigError

__all__ = ["check_output_dir", "check_output_file"]


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``lexists``: links count)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor or ".")


def _check_ancestors(path: Path, param: str) -> Path:
    """Refuse a path under a regular file or an unwritable folder; return its parent."""
    parent = path.parent
    existing = _first_existing(parent)
    if not existing.is_dir():
        raise ConfigError(
            f"{param}: {path} cannot be created because {existing} is a file, not a folder; "
            "choose a path whose folders are folders, or move that file away."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{param}: {path} cannot be written: permission denied in {existing}; choose a "
            "folder you can write to."
        )
    return existing


def check_output_file(path: str | os.PathLike, param: str) -> Path:
    """Check that a file can be written at ``path`` (nothing is created).

    Parameters
    ----------
    path : str or os.PathLike
        Where a file will be written; its missing folders may be created later.
    param : str
        The parameter as the user gave it, e.g. ``"--out"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        If ``path`` is a folder, lies under a regular file, or its folder is not writable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{param}: {path} is a folder, expected a file name; name a file inside it "
            f"(e.g. {path / 'output.tsv'}) or another path."
        )
    _check_ancestors(path, param)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(
            f"{param}: {path} exists and is not writable (permission denied); choose "
            "another file or fix its permissions."
        )
    return path


def check_output_dir(path: str | os.PathLike, param: str) -> Path:
    """Check that ``path`` is, or can be created as, a writable folder (nothing is created).

    Parameters
    ----------
    path : str or os.PathLike
        A folder to create or to write into.
    param : str
        The parameter as the user gave it, e.g. ``"--cache-dir"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        If ``path`` is a regular file, lies under one, or is not writable.
    """
    path = Path(path).expanduser()
    if os.path.lexists(path) and not path.is_dir():
        raise ConfigError(
            f"{param}: {path} is a file, expected a folder; choose another path (or move the "
            "file away)."
        )
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(
                f"{param}: folder {path} is not writable (permission denied); choose a "
                "folder you can write to."
            )
        return path
    _check_ancestors(path, param)
    return path
