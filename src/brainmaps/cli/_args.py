"""Helpers shared by the sub-commands: argument types that keep brainmaps' messages."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.validation import parse_list

__all__ = ["add_folds_subset_flag", "add_progress_flag", "argument_type", "atlas_argument",
           "folds_subset", "parse_numbers"]  # fmt: skip


def argument_type(func: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser such as ``parse_grid`` for ``add_argument(type=...)``.

    argparse replaces the message of a ``ValueError`` raised by a type function with
    ``invalid <name> value``; this wrapper passes the
    :class:`~brainmaps.exceptions.BrainmapsError`'s own explanation on instead, so
    ``--grid 3x3`` says why the value is wrong and how to write it.

    Parameters
    ----------
    func : callable
        Takes the option's text; raises a BrainmapsError on a bad value.

    Returns
    -------
    callable
    """

    def convert(text: str) -> Any:
        try:
            return func(text)
        except BrainmapsError as exc:
            raise argparse.ArgumentTypeError(" ".join(str(exc).split())) from None

    convert.__name__ = getattr(func, "__name__", "value")
    return convert


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no-progress`` (alias ``--quiet``): the one way every command hides its bars."""
    parser.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true",
        help="hide progress bars",
    )  # fmt: skip


def add_folds_subset_flag(
    parser: argparse.ArgumentParser, default: str = "all", *, when: str = ""
) -> None:
    """``--folds-subset 0,1``: the folds a command retrains; read it with :func:`folds_subset`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    default : str
        The folds retrained without the flag, for the help.
    when : str
        What the flag needs, for the help, e.g. ``"with --data-randomisation"``.
    """
    parser.add_argument(
        "--folds-subset",
        help=f"{when + ': ' if when else ''}comma-separated folds to retrain, e.g. 0,1 "
        f"(default: {default})",
    )


def folds_subset(args: argparse.Namespace) -> list[int] | None:
    """The folds of ``--folds-subset`` (:func:`add_folds_subset_flag`); ``None``: not given.

    Raises
    ------
    ConfigError
        If an item is not a whole number.
    """
    return parse_numbers(args.folds_subset, "--folds-subset")


def parse_numbers(text: str | None, flag: str, kind: type = int) -> list | None:
    """A comma-separated list of numbers such as ``--folds-subset 0,1``.

    Parameters
    ----------
    text : str or None
        The value given; ``None`` (not given) stays ``None``.
    flag : str
        The option, for the message, e.g. ``"--folds-subset"``.
    kind : type
        ``int`` or ``float``.

    Returns
    -------
    list or None

    Raises
    ------
    ConfigError
        If an item is not a number of that kind.
    """
    items = parse_list(text, flag, example="0.1,0.5" if kind is float else "0,1")
    if items is None:
        return None
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ConfigError(
            f"{flag}: expected {kind.__name__}s separated by commas, got {text!r}."
        ) from None


def atlas_argument(args: argparse.Namespace) -> str:
    """The atlas of ``--atlas``/``--labels``/``--builtin`` (regions, anatomy): a label image
    path or a built-in name, with a clear error for each wrong combination."""
    from brainmaps.analysis.builtin_atlases import DEFAULT_ATLAS, list_builtin_atlases

    if args.labels and not args.atlas:
        raise ConfigError(
            f"--labels {args.labels} was given without --atlas; pass the label image it "
            "belongs to (--atlas A.nii.gz --labels A.tsv), or drop --labels for a built-in."
        )
    if args.atlas and args.builtin:
        raise ConfigError("--atlas and --builtin exclude each other; give one of them.")
    if args.atlas:
        if not Path(args.atlas).is_file():
            raise ConfigError(f"--atlas: {args.atlas} does not exist; give a label NIfTI file.")
        return args.atlas
    name = args.builtin or DEFAULT_ATLAS
    if name not in list_builtin_atlases():
        raise ConfigError(
            f"--builtin: {name!r} is not a built-in atlas; choose from "
            f"{', '.join(list_builtin_atlases())} or pass --atlas/--labels."
        )
    return name
