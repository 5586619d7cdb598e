"""Option parsing of :class:`brainmaps.attribution.lrp.LRP` (private to :mod:`.lrp`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from brainmaps.exceptions import ConfigError

__all__ = [
    "COMPOSITES",
    "Rule",
    "check_bounds",
    "check_dtype",
    "check_epsilon",
    "layer_rules",
    "parse_rule",
]

_ALPHA_BETA = re.compile(r"alpha(\d+(?:\.\d+)?)beta(\d+(?:\.\d+)?)")
_FIRST_ONLY = ("zb", "flat", "wsquare")
#: Names of the composite rule (iNNvestigate's ``LRPSequentialPresetA``).
COMPOSITES = ("composite", "preset_a")


@dataclass(frozen=True)
class Rule:
    """A parsed rule name: ``kind`` is epsilon, alphabeta, zb, flat or wsquare."""

    kind: str
    alpha: float = 1.0
    beta: float = 0.0


def parse_rule(value: object, option: str, *, first_layer: bool) -> Rule:
    """The :class:`Rule` of a single rule name (not a composite).

    Raises
    ------
    ConfigError
        If ``value`` names no rule (``option`` and the accepted names are given).
    """
    if isinstance(value, str) and value == "epsilon":
        return Rule("epsilon")
    if isinstance(value, str) and first_layer and value in _FIRST_ONLY:
        return Rule(value)
    match = _ALPHA_BETA.fullmatch(value) if isinstance(value, str) else None
    if match and abs(float(match[1]) - float(match[2]) - 1.0) < 1e-9:
        return Rule("alphabeta", float(match[1]), float(match[2]))
    extra = ", 'zb', 'flat', 'wsquare'" if first_layer else ", 'composite' ('preset_a')"
    hint = ""
    if not first_layer and value in _FIRST_ONLY:
        hint = f" {value!r} is a first-layer rule: pass it as first_layer_rule."
    elif first_layer and value in COMPOSITES:
        hint = " A composite is a rule of the whole network: pass it as rule."
    raise ConfigError(
        f"LRP option {option} must be 'epsilon', 'alpha1beta0', 'alpha2beta1' or another "
        f"'alpha<a>beta<b>' with a - b = 1{extra}; got {value!r}.{hint}"
    )


def layer_rules(rule: object) -> dict[str, Rule]:
    """The rule of each affine layer kind (``"conv"``, ``"linear"``) for option ``rule``.

    A single rule applies to both kinds; ``"composite"`` / ``"preset_a"`` is
    iNNvestigate's ``LRPSequentialPresetA`` (Hofmann et al. 2022): alpha1beta0 (z+)
    in every convolution, epsilon in every dense layer.
    """
    if isinstance(rule, str) and rule in COMPOSITES:
        return {"conv": Rule("alphabeta", 1.0, 0.0), "linear": Rule("epsilon")}
    single = parse_rule(rule, "rule", first_layer=False)
    return {"conv": single, "linear": single}


def check_epsilon(epsilon: object) -> float:
    ok = isinstance(epsilon, int | float) and not isinstance(epsilon, bool)
    if not ok or not (0.0 < float(epsilon) < float("inf")):
        raise ConfigError(
            f"LRP option epsilon must be a positive finite number (default 1e-6; use e.g. "
            f"1e-9 for conservation checks), got {epsilon!r}."
        )
    return float(epsilon)


def check_bounds(bounds: object, first: Rule | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if first is None or first.kind != "zb":
        found = "the rule's own" if first is None else repr(first.kind)
        raise ConfigError(
            f"LRP option bounds={bounds!r} is only used by first_layer_rule='zb', but the "
            f"first-layer rule is {found}. Set first_layer_rule='zb' or drop bounds."
        )
    try:
        low, high = (float(v) for v in bounds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        low = high = float("nan")
    if not (low < high):
        raise ConfigError(
            f"LRP option bounds must be two numbers (lowest, highest input value) with "
            f"lowest < highest, got {bounds!r}."
        )
    return low, high


def check_dtype(dtype: object) -> torch.dtype | None:
    choices = {"float32": torch.float32, "float64": torch.float64}
    if dtype is None or dtype in choices.values():
        return dtype  # type: ignore[return-value]
    if isinstance(dtype, str) and dtype in choices:
        return choices[dtype]
    raise ConfigError(
        f"LRP option dtype must be None, 'float32', 'float64' or the torch dtype, got {dtype!r}."
    )
