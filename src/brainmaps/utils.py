"""Small helpers shared by several subpackages: atomic writes, hashing, lazy exports, and
reading yes / no cells of tables."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "falsy",
    "lazy_exports",
    "stable_hash",
    "truthy",
    "write_tsv",
]

#: How a true / false cell of a table reads back: pandas writes ``True`` / ``False``, a
#: column of booleans with gaps (NaN) that became floats is written ``1.0`` / ``0.0``,
#: and other tools write ``1`` / ``0`` or ``yes`` / ``no``.
_TRUE = ("true", "1", "1.0", "yes")
_FALSE = ("false", "0", "0.0", "no")


def truthy(value: Any) -> bool:
    """Whether a table cell says yes (``True``, ``"true"``, ``1``, ``1.0``, ``"yes"``).

    Anything else (``False``, an empty cell, ``NaN``, other text) is not.
    """
    return str(value).strip().lower() in _TRUE


def falsy(value: Any) -> bool:
    """Whether a table cell says no (``False``, ``"false"``, ``0``, ``0.0``, ``"no"``).

    An empty cell or ``NaN`` (not known) is neither :func:`truthy` nor falsy.
    """
    return str(value).strip().lower() in _FALSE


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


def lazy_exports(
    package: str, submodules: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's PEP 562 ``__getattr__`` and ``__dir__``.

    A package ``__init__`` names, per submodule, the public names it re-exports; each is
    imported on first access, so importing the package loads none of its submodules
    (``import brainmaps.analysis`` stays torch-free and fast).

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    submodules : dict of str to tuple of str
        Submodule (relative to ``package``, e.g. ``".maps"``, or absolute) -> the names
        it defines that the package exports.

    Returns
    -------
    __getattr__, __dir__ : callable
        The module-level hooks of PEP 562. The package keeps a literal ``__all__`` (and
        an ``if TYPE_CHECKING:`` block of the same imports) for static tools;
        ``tests/test_imports.py`` checks that the three agree.

    Examples
    --------
    In ``mypkg/__init__.py``::

        _SUBMODULES = {".core": ("run", "Config")}
        __all__ = ["Config", "run"]
        __getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
    """
    exports = {name: module for module, names in submodules.items() for name in names}
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
