"""Occlusion maps (Zeiler & Fergus; BrainImageNet), per subject and per cohort, fast.

A cube slides over the volume; each position is filled with zero or the subject's mean
and the network re-run. Per subject, a voxel gets the mean drop of the target score over
the windows covering it, exactly as Captum's ``Occlusion``; per cohort, the drop in
accuracy over the given subjects (Lu et al.). Occluded copies go through the network in
memory-bounded batches and, for chains of convolution / normalisation / activation /
pooling layers (xin2019, gap_cnn), only the part of each layer that a window reaches is
recomputed (:mod:`brainmaps.attribution._incremental`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from brainmaps.attribution._grid import grid_voxel_size, to_voxels, voxel_size_option
from brainmaps.attribution._incremental import OcclusionEngine
from brainmaps.attribution.base import AttributionMethod, frozen_eval, register_method
from brainmaps.exceptions import ConfigError, ShapeError

__all__ = ["Occlusion", "WindowGrid", "fill_values", "occlusion_accuracy_map", "window_grid"]

FILLS = ("zero", "mean")
OUTPUTS = ("probability", "logit")


@dataclass(frozen=True)
class WindowGrid:
    """Positions of the occluding cube, with Captum's ``Occlusion`` semantics.

    Along an axis of ``n`` voxels, a window of ``w`` voxels moved by ``s`` voxels takes
    ``ceil((n - w) / s) + 1`` positions starting at ``0, s, 2s, ...``; the last one may
    stick out of the volume and is then cut off.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the volume, in voxels.
    window : tuple of int
        Edge of the cube per axis, in voxels (at most ``shape``).
    stride : tuple of int
        Step per axis, in voxels (at most ``window`` where ``window < shape``).
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def starts(self) -> list[np.ndarray]:
        """First voxel of every position, per axis."""
        return [
            np.arange(-(-(n - w) // s) + 1) * s
            for n, w, s in zip(self.shape, self.window, self.stride, strict=True)
        ]

    @property
    def counts(self) -> tuple[int, ...]:
        """Number of positions per axis."""
        return tuple(len(s) for s in self.starts)

    def boxes(self) -> np.ndarray:
        """``(n_windows, nd, 2)`` windows ``[start, end)`` per axis, first axis slowest."""
        grids = np.meshgrid(*self.starts, indexing="ij")
        start = np.stack([g.ravel() for g in grids], axis=1)
        end = np.minimum(start + np.asarray(self.window), np.asarray(self.shape))
        return np.stack([start, end], axis=2).astype(np.int64)

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """Mean, at every voxel, of the ``values`` (one per window) of the windows covering it.

        Parameters
        ----------
        values : torch.Tensor
            ``(n_windows,)`` in the order of :meth:`boxes`.

        Returns
        -------
        torch.Tensor
            ``float64`` map of :attr:`shape`.
        """
        total = values.to(torch.float64).reshape(self.counts)
        count = torch.ones_like(total)
        for start, n, w in zip(self.starts, self.shape, self.window, strict=True):
            cover = torch.zeros(len(start), n, dtype=torch.float64, device=values.device)
            for i, first in enumerate(start.tolist()):
                cover[i, first : first + w] = 1.0
            total = torch.tensordot(total, cover, dims=([0], [0]))
            count = torch.tensordot(count, cover, dims=([0], [0]))
        return total / count


def _positive(owner: str, name: str, value: Any, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{owner} option {name} must be {what}, got {value!r}.")
    return value


def _choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{owner} option {name} must be one of {choices}, got {value!r}.")
    return value


def _check_mm(window_mm: Any, stride_mm: Any) -> None:
    _positive("occlusion", "window_mm", window_mm)
    _positive("occlusion", "stride_mm", stride_mm)
    if stride_mm > window_mm:
        raise ConfigError(
            f"occlusion option stride_mm={stride_mm} exceeds window_mm={window_mm}: voxels "
            "between windows would never be occluded; use stride_mm <= window_mm."
        )


def window_grid(
    shape: Sequence[int],
    window_mm: float = 18.0,
    stride_mm: float = 9.0,
    voxel_size: float | Sequence[float] | None = None,
) -> WindowGrid:
    """Convert a cube edge and a step in millimetres to voxel window positions.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the volumes.
    window_mm, stride_mm : float
        Cube edge and step, in mm; ``stride_mm <= window_mm`` so that every voxel is
        covered.
    voxel_size : float or sequence of 3 float, optional
        mm per voxel; by default that of the MNI grid of this shape
        (:func:`brainmaps.data.mni_grid`).

    Returns
    -------
    WindowGrid
        Window and stride rounded to the nearest voxel count (halves up), at least one
        voxel, the window at most the volume's size.
    """
    shape = tuple(int(n) for n in shape)
    _check_mm(window_mm, stride_mm)
    sizes = grid_voxel_size(shape, voxel_size_option("occlusion", voxel_size))
    window = tuple(min(to_voxels(window_mm, v), n) for v, n in zip(sizes, shape, strict=True))
    stride = tuple(to_voxels(stride_mm, v) for v in sizes)
    return WindowGrid(shape, window, stride)


def fill_values(x: torch.Tensor, fill: str) -> torch.Tensor:
    """Per-channel value ``(C,)`` written into the window of one subject ``(1, C, *D)``.

    ``"zero"``: 0. ``"mean"``: the mean of the channel's non-zero voxels (the tissue of
    a skull-stripped, background-zero scan; about 0 for z-scored inputs), 0 if none.
    """
    flat = x[0].reshape(x.shape[1], -1)
    if fill == "zero":
        return torch.zeros(flat.shape[0], dtype=x.dtype, device=x.device)
    nonzero = flat != 0
    total = torch.where(nonzero, flat, torch.zeros_like(flat)).sum(1, dtype=torch.float64)
    return (total / nonzero.sum(1).clamp(min=1)).to(x.dtype)


def _engine_options(owner: str, max_batch: Any, memory_bound_mb: Any, incremental: Any) -> dict:
    if not isinstance(incremental, bool):
        raise ConfigError(f"{owner} option incremental must be true or false, got {incremental!r}.")
    return {
        "max_batch": _positive(owner, "max_batch", max_batch, integer=True),
        "memory_bound_mb": float(_positive(owner, "memory_bound_mb", memory_bound_mb)),
        "incremental": incremental,
    }


@register_method("occlusion")
class Occlusion(AttributionMethod):
    """Drop of the target score when a sliding cube of the volume is occluded.

    For each position of a cube of ``window_mm`` moved by ``stride_mm``, the cube is
    filled and the network re-run; each voxel gets the mean, over the windows covering
    it, of ``score(x) - score(x_occluded)``, where the score is the softmax probability
    (or the logit) of the target class, or the output of a regression model. Window
    positions, cut-off windows at the far edges and the averaging are exactly those of
    Captum's ``Occlusion`` with ``sliding_window_shapes=(C, *window)``,
    ``strides=(1, *stride)`` and the fill as ``baselines``, on the model followed by a
    softmax; the maps are equal to Captum's to float tolerance (the window spans all
    channels, so Captum's per-channel values are one value per voxel here).

    Speed: occluded copies go through the network many at a time within a memory bound;
    for networks that start with a chain of ``Conv3d`` / ``BatchNorm3d`` / activation /
    ``MaxPool3d`` / ``AvgPool3d`` modules (discovered in forward order, whatever their
    names), the unoccluded activations are computed once per subject and only the part
    of each layer that a window's receptive field reaches is recomputed (Krypton's
    incremental inference). Other architectures run whole occluded copies.

    Parameters
    ----------
    model : torch.nn.Module
    window_mm : float
        Edge of the occluding cube in millimetres (default 18 mm), converted per axis to
        the nearest number of voxels (at least 1, at most the volume).
    stride_mm : float
        Step between cube positions in millimetres (default 9 mm), ``<= window_mm``.
    fill : {"zero", "mean"}
        Value written into the cube: 0, or per subject and channel the mean of the
        non-zero (tissue) voxels.
    voxel_size : float or sequence of 3 float, optional
        mm per voxel of the inputs; by default that of ``brainmaps.data.mni_grid`` of the
        input shape (the grid brainmaps resamples to).
    max_batch : int
        Most occluded copies per forward pass (default 64).
    memory_bound_mb : float
        Bound in MiB on the estimated activation memory of one batch of occluded copies
        (default 1024); the batch shrinks to respect it (never below one copy).
    output : {"probability", "logit"}
        Score whose drop is measured (regression models always use their output).
    incremental : bool
        Use incremental inference where the network allows it (default True); False
        forces whole-copy forward passes (same result, slower).

    References
    ----------
    .. [1] M. D. Zeiler, R. Fergus, "Visualizing and Understanding Convolutional
       Networks", ECCV 2014.
    .. [2] B. Lu et al., "A practical Alzheimer's disease classifier via brain
       imaging-based deep learning on 85,721 samples", Journal of Big Data 9:101, 2022.
    .. [3] S. Nakandala, A. Kumar, Y. Papakonstantinou, "Incremental and Approximate
       Inference for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019.
    .. [4] N. Kokhlikyan et al., "Captum: A unified and generic model interpretability
       library for PyTorch", arXiv:2009.07896, 2020.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        window_mm: float = 18.0,
        stride_mm: float = 9.0,
        fill: str = "zero",
        voxel_size: float | Sequence[float] | None = None,
        max_batch: int = 64,
        memory_bound_mb: float = 1024.0,
        output: str = "probability",
        incremental: bool = True,
    ) -> None:
        super().__init__(model)
        _check_mm(window_mm, stride_mm)
        self.window_mm, self.stride_mm = float(window_mm), float(stride_mm)
        self.voxel_size = voxel_size_option("occlusion", voxel_size)
        self.fill = _choice("occlusion", "fill", fill, FILLS)
        self.output = _choice("occlusion", "output", output, OUTPUTS)
        self.engine_options = _engine_options("occlusion", max_batch, memory_bound_mb, incremental)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        grid = window_grid(x.shape[2:], self.window_mm, self.stride_mm, self.voxel_size)
        with torch.no_grad():
            engine = OcclusionEngine(self.model, x[:1], grid.boxes(), **self.engine_options)
            maps = []
            for i in range(x.shape[0]):
                x1 = x[i : i + 1]
                occluded = engine.outputs(x1, fill_values(x1, self.fill))
                drop = self._score(self._forward(x1), targets[i]) - self._score(
                    occluded, targets[i]
                )
                maps.append(grid.spread(drop).to(x.dtype))
        return torch.stack(maps)

    def _score(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if out.shape[1] > 1 and self.output == "probability":
            out = torch.softmax(out, dim=1)
        return out[:, target]


def _subject(volume: Any, index: int, device: torch.device) -> torch.Tensor:
    """One volume ``(X, Y, Z)`` or ``(C, X, Y, Z)`` as a float ``(1, C, X, Y, Z)`` tensor."""
    t = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ShapeError(
            f"occlusion_accuracy_map: volumes[{index}] has shape {tuple(t.shape)}; expected "
            "(X, Y, Z) or (C, X, Y, Z)."
        )
    return t.to(device=device, dtype=torch.float32).unsqueeze(0)


def occlusion_accuracy_map(
    model: nn.Module,
    volumes: Any,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    window_mm: float = 18.0,
    stride_mm: float = 9.0,
    fill: str = "zero",
    voxel_size: float | Sequence[float] | None = None,
    max_batch: int = 64,
    memory_bound_mb: float = 1024.0,
    incremental: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Drop in accuracy over a group of (test) subjects when a cube is occluded (Lu et al.).

    For each cube position, every subject is occluded there (the same position for all)
    and classified (arg-max of the outputs); the drop is ``accuracy(unoccluded) -
    accuracy(occluded)`` over the subjects. Each voxel gets the mean drop over the
    windows covering it. Window positions and options are those of :class:`Occlusion`.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier (two or more outputs); its mode and parameters are restored.
    volumes : sequence of array-like or torch.Tensor
        ``volumes[i]`` is subject ``i``: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` (a
        :class:`~brainmaps.data.cache.CachedVolumes`, an ``(N, ...)`` array or a list).
    labels : sequence of int
        True class of each subject.
    window_mm, stride_mm, fill, voxel_size, max_batch, memory_bound_mb, incremental
        As in :class:`Occlusion`.
    progress : bool
        Show a progress bar over subjects.

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(X, Y, Z)`` map of accuracy drops (fractions in ``[-1, 1]``).

    Raises
    ------
    ShapeError
        If the labels do not match the volumes or volumes differ in shape.
    ConfigError
        On invalid options or a regression model (accuracy is undefined).
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(volumes) or len(labels) == 0:
        raise ShapeError(
            f"occlusion_accuracy_map got {len(volumes)} volumes and {len(labels)} labels; give "
            "one label per volume (at least one)."
        )
    fill = _choice("occlusion", "fill", fill, FILLS)
    options = _engine_options("occlusion", max_batch, memory_bound_mb, incremental)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    from tqdm.auto import tqdm

    with frozen_eval(model), torch.no_grad():
        first = _subject(volumes[0], 0, device)
        grid = window_grid(first.shape[2:], window_mm, stride_mm, voxel_size)
        engine = OcclusionEngine(model, first, grid.boxes(), **options)
        base_correct, correct = 0, torch.zeros(len(grid.boxes()), device=device)
        for i in tqdm(range(len(labels)), disable=not progress, desc="occlusion"):
            x = first if i == 0 else _subject(volumes[i], i, device)
            if x.shape != first.shape:
                raise ShapeError(
                    f"occlusion_accuracy_map: volumes[{i}] has shape {tuple(x.shape[1:])}, "
                    f"volumes[0] has {tuple(first.shape[1:])}; resample to one grid."
                )
            base = model(x).reshape(1, -1)
            if base.shape[1] < 2:
                raise ConfigError(
                    "occlusion_accuracy_map needs a classifier (two or more outputs); the "
                    "model has one output. Use Occlusion for regression models."
                )
            base_correct += int(base.argmax(1).item() == labels[i])
            predicted = engine.outputs(x, fill_values(x, fill)).argmax(1)
            correct += (predicted == int(labels[i])).to(correct.dtype)
    drop = (base_correct - correct) / len(labels)
    return grid.spread(drop).cpu().numpy().astype(np.float32)
