"""Options in millimetres on a voxel grid: the one conversion the methods share.

An option that means a physical size (an occluding cube, a blur, a shift, the voxels of
a coarse mask) is given in mm and converted per axis with the voxel size of the
inputs: by default that of :func:`brainmaps.data.mni_grid` of the input's shape, the
grid brainmaps resamples every volume to, or a ``voxel_size`` option. The same option
then means the same millimetres at 36x44x36 and at 58x70x58.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from brainmaps.exceptions import ConfigError

__all__ = [
    "format_mm",
    "grid_voxel_size",
    "renamed_option_message",
    "to_voxels",
    "voxel_size_option",
]

#: The grid of Kan et al. (and brainmaps' default), whose voxels the papers' options count.
PAPER_GRID = (58, 70, 58)


def voxel_size_option(owner: str, value: Any) -> tuple[float, float, float] | None:
    """Check a ``voxel_size`` option: None, one positive number or three (mm along x, y, z)."""
    if value is None:
        return None
    items = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    items = (value,) * 3 if items is None else items
    ok = len(items) == 3 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in items
    )
    if not ok:
        raise ConfigError(
            f"{owner} option voxel_size must be one positive number or three (mm per voxel "
            f"along x, y, z), got {value!r}."
        )
    return tuple(float(v) for v in items)


def grid_voxel_size(
    shape: Sequence[int], sizes: Sequence[float] | None = None
) -> tuple[float, ...]:
    """mm per voxel along each axis: ``sizes`` if given, else that of ``mni_grid(shape)``."""
    if sizes is not None:
        return tuple(float(v) for v in sizes)
    from brainmaps.data import mni_grid

    return tuple(float(v) for v in mni_grid(tuple(int(n) for n in shape)).voxel_size)


def to_voxels(mm: float, size: float, minimum: int = 1) -> int:
    """``mm`` as the nearest whole number of voxels of ``size`` mm (halves up), >= ``minimum``."""
    return max(minimum, math.floor(mm / size + 0.5))


def format_mm(values: Sequence[float]) -> str:
    """``"50.6 mm"`` when the axes agree to 0.1 mm, else ``"50.6 x 49.5 x 50.6 mm"``."""
    text = [f"{v:.1f}" for v in values]
    return f"{text[0]} mm" if len(set(text)) == 1 else " x ".join(text) + " mm"


def renamed_option_message(
    owner: str,
    old: str,
    new: str,
    value: Any,
    shape: Sequence[int] | None = None,
    options: Mapping[str, Any] | None = None,
) -> str:
    """The refusal of a former option in voxels, with its value converted to mm.

    The voxels are those of ``options["voxel_size"]`` if given, else of the MNI grid of
    ``shape`` (the input grid, where the caller knows it), else of the paper's 58x70x58.
    """
    head = f"{owner} option {old} is now {new} (mm)"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return f"{head}: give the size in millimetres (voxels times mm per voxel)."
    given = voxel_size_option(owner, (options or {}).get("voxel_size"))
    grid = tuple(int(n) for n in (shape if shape is not None else PAPER_GRID))
    sizes = grid_voxel_size(grid, given)
    if given is not None:
        where = f"of {format_mm(sizes)}"
    else:
        which = "this" if shape is not None else "the paper's"
        where = f"at {which} {'x'.join(map(str, grid))} grid"
    mm = [float(value) * v for v in sizes]
    return (
        f"{head}: {value:g} voxel{'' if value == 1 else 's'} {where} = {format_mm(mm)}; give "
        f"one value in mm, e.g. {new}={math.ceil(max(mm) * 10 - 1e-6) / 10:g}."
    )
