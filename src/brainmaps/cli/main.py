"""The ``brainmaps`` command: one sub-command per module of :mod:`brainmaps.cli`."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from brainmaps import __version__
from brainmaps.cli import (
    baseline,
    compare,
    demo,
    explain,
    faithfulness,
    first_layer,
    localise,
    masked_eval,
    morphometry,
    predict,
    preprocess,
    regions,
    report,
    synth,
    train,
)
from brainmaps.exceptions import BrainmapsError, BrainmapsWarning

__all__ = ["build_parser", "main"]

_COMMANDS = (
    synth,
    preprocess,
    train,
    predict,
    explain,
    compare,
    regions,
    localise,
    faithfulness,
    masked_eval,
    first_layer,
    baseline,
    morphometry,
    report,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    User errors (:class:`~brainmaps.exceptions.BrainmapsError`) print one line on stderr
    and give exit status 2; an interruption gives 130. Anything else is a bug and keeps
    its traceback.
    """
    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return int(args.run(args) or 0)
    except BrainmapsError as exc:
        text = " ".join(str(exc).split())
        print(f"brainmaps {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"brainmaps {args.command}: interrupted; run it again to resume.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
