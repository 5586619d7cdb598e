"""Checks of scalar parameters and the one comma-list splitter."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from brainmaps.exceptions import ConfigError

__all__ = ["check_choice", "check_float", "check_fraction", "check_int", "parse_list"]


def _label(name: str, flag: str | None) -> str:
    return flag or name


def _interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_int(
    name: str, value: Any, *, min: int | None = None, max: int | None = None, flag=None
) -> int:
    """Check that ``value`` is an integer in ``[min, max]``; return it as ``int``.

    Parameters
    ----------
    name : str
        The parameter's keyword, used in the message unless ``flag`` is given.
    value : object
        An ``int`` or NumPy integer (a float with an integral value is accepted).
    min, max : int, optional
        Inclusive bounds.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--epochs"``.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If ``value`` is not an integer (booleans are not) or lies outside the bounds.
    """
    label = _label(name, flag)
    expected = f"an integer{_interval(min, max)}"
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer()
    )
    if isinstance(value, bool) or not integral:
        raise ConfigError(f"{label}: expected {expected}, got {value!r}. Pass {expected}.")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        raise ConfigError(
            f"{label}: expected {expected}, got {value}. Choose a value inside that range."
        )
    return value


def check_float(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    flag: str | None = None,
) -> float:
    """Check that ``value`` is a finite real number within bounds; return it as ``float``.

    Parameters
    ----------
    name : str
        The parameter's keyword, used in the message unless ``flag`` is given.
    value : object
        An int, float or NumPy number.
    min, max : float, optional
        Bounds, inclusive unless ``min_open`` / ``max_open``.
    min_open, max_open : bool
        Exclude the bound itself.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--lr"``.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        If ``value`` is not a finite number or lies outside the bounds.
    """
    label = _label(name, flag)
    expected = f"a number{_interval(min, max, min_open, max_open)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{label}: expected {expected}, got {value!r}. Pass {expected}.")
    value = float(value)
    below = min is not None and (value <= min if min_open else value < min)
    above = max is not None and (value >= max if max_open else value > max)
    if not math.isfinite(value) or below or above:
        raise ConfigError(
            f"{label}: expected {expected}, got {value!r}. Choose a value inside that range."
        )
    return value


def check_fraction(
    name: str, value: Any, *, closed: bool = False, flag: str | None = None
) -> float:
    """Check that ``value`` is a fraction: in ``(0, 1)``, or ``[0, 1]`` when ``closed``.

    Parameters
    ----------
    name : str
        The parameter's keyword.
    value : object
        A number.
    closed : bool
        Accept 0 and 1 themselves.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--val-fraction"``.

    Returns
    -------
    float
    """
    return check_float(
        name, value, min=0, max=1, min_open=not closed, max_open=not closed, flag=flag
    )


def check_choice(name: str, value: Any, choices: Iterable[str], flag: str | None = None) -> str:
    """Check that ``value`` is one of ``choices``; return it.

    Parameters
    ----------
    name : str
        The parameter's keyword.
    value : object
        The value given.
    choices : iterable of str
        The accepted values.
    flag : str, optional
        The parameter as the user gave it, e.g. ``"--task"``.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        Naming the accepted values (and the closest one when it differs only in case).
    """
    choices = tuple(choices)
    if isinstance(value, str) and value in choices:
        return value
    close = [c for c in choices if isinstance(value, str) and c.lower() == value.strip().lower()]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{_label(name, flag)}: expected one of {', '.join(map(str, choices))}, got "
        f"{value!r}.{hint}"
    )


def parse_list(
    text: str | Iterable[str] | None,
    param: str,
    *,
    choices: Iterable[str] | None = None,
    example: str = "a,b",
) -> list[str] | None:
    """Split a comma-separated list such as ``--methods grad_cam,gradient``.

    Parameters
    ----------
    text : str, iterable of str or None
        The value given; ``None`` (not given) stays ``None``, a list is taken as is.
    param : str
        The parameter as the user gave it, e.g. ``"--methods"``.
    choices : iterable of str, optional
        Accepted names; any other raises.
    example : str
        An example value for the message.

    Returns
    -------
    list of str or None
        Stripped, non-empty names in order, each once.

    Raises
    ------
    ConfigError
        If no name is left, or a name is not among ``choices``.
    """
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if choices is not None:
        choices = tuple(choices)
        example = ",".join(choices[:2]) or example
    if not names:
        raise ConfigError(
            f"{param}: expected comma-separated names (e.g. {example}), got {text!r}."
        )
    if choices is not None:
        unknown = [n for n in names if n not in choices]
        if unknown:
            raise ConfigError(
                f"{param}: unknown name(s) {', '.join(unknown)}; choose from {', '.join(choices)}."
            )
    return names
