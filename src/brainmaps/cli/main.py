"""The ``brainmaps`` command: one sub-command per module of :mod:`brainmaps.cli`."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from brainmaps import __version__
from brainmaps.cli import (
    anatomy,
    baseline,
    clinical,
    compare,
    demo,
    explain,
    faithfulness,
    first_layer,
    import_model,
    layers,
    localise,
    masked_eval,
    morphometry,
    predict,
    preprocess,
    regions,
    report,
    roar,
    sanity,
    serve,
    synth,
    thresholds,
    train,
    trust,
)
from brainmaps.exceptions import BrainmapsError, BrainmapsWarning

__all__ = ["build_parser", "main"]

_COMMANDS = (
    synth,
    preprocess,
    train,
    predict,
    import_model,
    thresholds,
    clinical,
    explain,
    compare,
    regions,
    anatomy,
    localise,
    faithfulness,
    sanity,
    layers,
    masked_eval,
    roar,
    first_layer,
    trust,
    baseline,
    morphometry,
    report,
    serve,
    demo,
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (then exit status 2)."""

    def error(self, message: str):
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text.rstrip('.')}; see '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = _Parser(
        prog="brainmaps",
        description="Train 3D CNNs on brain MRI and explain them voxel by voxel.",
    )
    parser.add_argument("--version", action="version", version=f"brainmaps {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _COMMANDS:
        module.add_parser(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, BrainmapsWarning):
        text = " ".join(str(message).split())
        print(f"brainmaps: warning: {text}", file=file or sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning

#: OSErrors about a path that are the user's to fix, with what to say about them.
_PATH_ERRORS = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


def _file_on_the_way(path: Path) -> Path | None:
    """The first regular file among the folders above ``path``, if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def path_error_line(exc: OSError, output: str | None = None) -> str | None:
    """One line for an OSError about a path (or a full disk); None for any other OSError.

    Parameters
    ----------
    exc : OSError
    output : str, optional
        Where the command writes, named for a full disk when ``exc`` names no file.

    Returns
    -------
    str or None
    """
    name = exc.filename if exc.filename is not None else exc.filename2
    if exc.errno == errno.ENOSPC:
        where = f" while writing {name}" if name is not None else ""
        where = where or (f" while writing to {output}" if output else "")
        return (
            f"no space left on device{where}; free some disk space or write elsewhere (e.g. "
            "another --out or --cache-dir), then run the command again."
        )
    if not isinstance(exc, _PATH_ERRORS) or name is None:
        return None
    path = Path(os.fsdecode(name))
    blocker = _file_on_the_way(path)
    if isinstance(exc, NotADirectoryError | FileExistsError) and blocker is not None:
        return f"{path} cannot be created: {blocker} is a file, not a folder; choose another path."
    if isinstance(exc, FileExistsError):
        if path.is_file():
            return f"{path} is a file where a folder is needed; choose another path."
        return f"{path} already exists; choose another path (or remove it)."
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, expected a file; give a file name (e.g. inside that folder)."
    if isinstance(exc, NotADirectoryError):
        return f"{path}: a part of this path is not a folder; check the path."
    if isinstance(exc, PermissionError):
        return f"permission denied: {path}; choose a location you can write to (or read from)."
    return f"{path} does not exist; check the path."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    User errors (:class:`~brainmaps.exceptions.BrainmapsError`, a bad option, and
    OSErrors about a path: missing, a file where a folder is needed or the reverse,
    permission denied, no space left on device) print one line on stderr and give exit
    status 2; an interruption gives 130. Anything else is a bug and keeps its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except BrainmapsError as exc:
        text = " ".join(str(exc).split())
        print(f"brainmaps {args.command}: error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        output = getattr(args, "out", None) or getattr(args, "run_dir", None)
        line = path_error_line(exc, output)
        if line is None:
            raise
        print(f"brainmaps {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"brainmaps {args.command}: interrupted; run it again to resume.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
