"""Look up network architectures by their snake_case name.

Every architecture module registers its class with :func:`register_model`; the CLI,
the configuration files and the checkpoints refer to models by that name only, so a
checkpoint can rebuild its network with ``create_model(meta["model"], **meta["model_config"])``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from brainmaps.exceptions import ConfigError

__all__ = ["create_model", "get_model_class", "list_models", "register_model"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

T = TypeVar("T", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[T], T]:
    """Return a decorator that registers a model class (or factory) under ``name``.

    Parameters
    ----------
    name : str
        A snake_case name (``"xin2019"``, ``"gap_cnn"``), used by configs and the CLI.

    Returns
    -------
    callable
        The decorator; it returns the class unchanged.

    Raises
    ------
    ConfigError
        If ``name`` is not snake_case or is already taken by another object.

    Examples
    --------
    >>> @register_model("my_net")  # doctest: +SKIP
    ... class MyNet(nn.Module): ...
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"model name {name!r} is not snake_case; use lower-case letters, digits and "
            "single underscores, starting with a letter (e.g. 'gap_cnn')."
        )

    def decorator(builder: T) -> T:
        existing = _REGISTRY.get(name)
        same = existing is not None and (
            existing is builder or _qualname(existing) == _qualname(builder)
        )
        if existing is not None and not same:
            raise ConfigError(
                f"model name {name!r} is already registered by {_qualname(existing)}; "
                f"choose another name for {_qualname(builder)}."
            )
        _REGISTRY[name] = builder
        return builder

    return decorator


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def list_models() -> list[str]:
    """Return the names of all registered models, sorted.

    Returns
    -------
    list of str
    """
    return sorted(_REGISTRY)


def get_model_class(name: str) -> Callable[..., nn.Module]:
    """Return the class (or factory) registered under ``name``.

    Raises
    ------
    ConfigError
        If no model has that name; the message lists the available names.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown model {name!r}; available models: {', '.join(list_models()) or 'none'}. "
            "Pick one of them (e.g. --model xin2019)."
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered under ``name``.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    **kwargs
        Constructor arguments (e.g. ``in_channels``, ``n_classes``, ``input_shape``).

    Returns
    -------
    torch.nn.Module
        A freshly initialised model (weights drawn from torch's global generator).

    Raises
    ------
    ConfigError
        If ``name`` is unknown, or a keyword is not a parameter of the model or a
        required parameter is missing (the parameter is named).
    """
    builder = get_model_class(name)
    _check_kwargs(name, builder, kwargs)
    return builder(**kwargs)


def _check_kwargs(name: str, builder: Callable[..., Any], kwargs: dict) -> None:
    """Bind ``kwargs`` to the constructor's signature, naming any bad parameter."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    params = signature.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [p for p in params if params[p].kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(params))
    if unknown and not accepts_any:
        raise ConfigError(
            f"model {name!r} has no parameter(s) {unknown}; its parameters are {known}. "
            "Remove or rename them in model.options."
        )
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"model {name!r} cannot be built with {sorted(kwargs)}: {exc}; "
            f"its parameters are {known}."
        ) from None
