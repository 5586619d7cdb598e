"""Which options made a stage's outputs: ``<run>/stages/<stage>.yaml``.

Every command that writes results into a run folder records its resolved options with
a stable hash. Before reusing outputs, the command compares its options with the record:
the same options reuse (resume), other options either recompute (``overwrite``) or are
refused with a message naming each changed option.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from brainmaps import __version__
from brainmaps.exceptions import ConfigError
from brainmaps.utils import atomic_write_text, stable_hash

__all__ = ["StageOptionsError", "check_stage", "read_stage", "write_stage"]


class StageOptionsError(ConfigError):
    """A stage's outputs exist but were made with other options."""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def read_stage(path: str | Path) -> dict | None:
    """The record at ``path`` (``None`` when absent or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return record if isinstance(record, dict) else None


def write_stage(path: str | Path, stage: str, options: dict) -> dict:
    """Record that ``stage`` ran with ``options`` (atomic write); return the record."""
    options = _plain(dict(options))
    record = {
        "stage": stage,
        "options": options,
        "hash": stable_hash(options),
        "brainmaps_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(path, yaml.safe_dump(record, sort_keys=True))
    return record


def changed_options(record: dict | None, options: dict) -> list[str]:
    """Names of the options whose value differs from the record (``[]``: same)."""
    if record is None:
        return []
    old = record.get("options") or {}
    new = _plain(dict(options))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_stage(path: str | Path, stage: str, options: dict, *, overwrite: bool, hint: str) -> bool:
    """Compare ``options`` with the record of earlier outputs.

    Parameters
    ----------
    path : str or pathlib.Path
        The stage record.
    stage : str
        What the outputs are (for the message, e.g. ``"maps/gradient"``).
    options : dict
        The options of this call.
    overwrite : bool
        Recompute when the options changed, instead of refusing.
    hint : str
        How to keep both results (e.g. ``"use --out-name NAME"``).

    Returns
    -------
    bool
        ``True`` when earlier outputs may be reused (same options or no record);
        ``False`` when they must be recomputed (changed options and ``overwrite``).

    Raises
    ------
    StageOptionsError
        When the options changed and ``overwrite`` is not set.
    """
    record = read_stage(path)
    changed = changed_options(record, options)
    if not changed:
        return True
    if overwrite:
        return False
    old = record.get("options") or {}
    new = _plain(dict(options))
    detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    raise StageOptionsError(
        f"{stage} already holds results made with other options ({detail}); pass "
        f"--overwrite to recompute them, or {hint}."
    )
