"""Command-line options built from the configuration dataclasses.

Each option is written once: its name, type and default come from the dataclass field,
its help from the ``Parameters`` section of the class docstring (numpydoc), so
``brainmaps train --help`` cannot drift from :class:`~brainmaps.run.config.RunConfig`.
Every flag defaults to ``None`` on the parser, so only the options a user gives override
a ``--config`` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigOption", "add_config_options", "config_options", "overrides"]


@dataclass(frozen=True)
class ConfigOption:
    """One command-line flag mapped onto one field of a config section."""

    flag: str
    section: str
    key: str
    kind: Callable[[str], Any] | None  # None: a boolean switch
    default: Any
    help: str


_ROLE = re.compile(r":\w+:`~?([^`]+)`")


def _clean(text: str) -> str:
    """Drop reStructuredText markup from a docstring phrase."""
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1], text)
    return text.replace("``", "").replace('"', "")


def _docstring_help(cls: type) -> dict[str, str]:
    """``{parameter: description}`` from a numpydoc ``Parameters`` section.

    The description is the first paragraph; a ``{a, b}`` type line adds "one of a, b".
    """
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"Parameters\n-+\n(.*?)(\n\S[^\n]*\n-+\n|\Z)", doc, re.S)
    helps: dict[str, list[str]] = {}
    names: list[str] = []
    for line in (match.group(1) if match else "").splitlines():
        if line and not line.startswith(" "):
            head, _, spec = line.partition(":")
            names = [n.strip() for n in head.split(",")]
            choices = re.match(r"\s*\{([^}]*)\}", spec)
            for name in names:
                helps[name] = []
                if choices:
                    helps[name].append("one of " + _clean(choices.group(1)) + ";")
        elif line.strip():
            for name in names:
                helps[name].append(line.strip())
        else:
            names = []  # a blank line ends the first paragraph
    return {k: _clean(" ".join(v)).rstrip(".;") for k, v in helps.items()}


def _kind(annotation: str, default: Any) -> Callable[[str], Any] | None:
    text = str(annotation)
    if text == "bool" or isinstance(default, bool):
        return None
    if text.startswith("int") or type(default) is int:
        return int
    if text.startswith("float") or type(default) is float:
        return float
    return str


def config_options(
    cls: type,
    section: str,
    *,
    skip: Sequence[str] = (),
    flags: dict[str, str] | None = None,
    kinds: dict[str, Callable[[str], Any]] | None = None,
) -> list[ConfigOption]:
    """The flags of one config dataclass.

    Parameters
    ----------
    cls : type
        A frozen dataclass with a numpydoc docstring.
    section : str
        Its section name in the run configuration (``"training"``, ...).
    skip : sequence of str
        Fields without a flag.
    flags : dict, optional
        ``{field: "--flag"}`` where the flag is not the field's name.
    kinds : dict, optional
        ``{field: parser}`` where the value needs its own parser (e.g. a grid).
    """
    helps = _docstring_help(cls)
    flags, kinds = dict(flags or {}), dict(kinds or {})
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = kinds.get(f.name, _kind(f.type, default))
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        if kind is None and default is True:
            flag = flags.get(f.name, "--no-" + f.name.replace("_", "-"))
        out.append(ConfigOption(flag, section, f.name, kind, default, helps.get(f.name, "")))
    return out


def _help(option: ConfigOption) -> str:
    text = option.help
    if option.kind is None:
        return f"turn off: {text}" if option.default is True else text
    default = option.default
    if isinstance(default, tuple | list):
        default = "x".join(map(str, default))
    return f"{text} (default {default})" if default is not None else text


def add_config_options(parser: argparse.ArgumentParser, options: Sequence[ConfigOption]) -> None:
    """Add each option to ``parser`` (value flags default to ``None``; switches to False)."""
    for o in options:
        dest = f"cfg__{o.section}__{o.key}"
        if o.kind is None:
            parser.add_argument(o.flag, dest=dest, action="store_true", help=_help(o))
        else:
            metavar = o.key.upper()
            parser.add_argument(
                o.flag, dest=dest, type=o.kind, default=None, metavar=metavar, help=_help(o)
            )


def overrides(args: argparse.Namespace, options: Sequence[ConfigOption]) -> dict[str, dict]:
    """``{section: {key: value}}`` of the options given on the command line."""
    out: dict[str, dict] = {}
    for o in options:
        value = getattr(args, f"cfg__{o.section}__{o.key}")
        if o.kind is None:
            if value:  # a switch flips the field's default
                out.setdefault(o.section, {})[o.key] = not o.default
            continue
        if value is not None:
            value = list(value) if isinstance(value, tuple) else value
            out.setdefault(o.section, {})[o.key] = value
    return out
