"""What a forward pass runs through, and where each layer's outputs sit on the input grid.

The one tracer and the one receptive-field geometry of brainmaps, shared by the
attribution engines (aligned upsampling, incremental occlusion, LRP) and the
first-layer feature statistics:

* :func:`trace` runs a model once (without gradients) with hooks on its leaf modules
  and returns the leaf calls in forward order, with their input and output shapes and
  whether each call read the previous call's output. The hooks are removed in a
  ``finally`` block, whatever happens.
* :data:`POINTWISE` is the one tuple of module types that keep the spatial grid and act
  on every voxel alone (activations, dropout, batch normalisation, identity).
* :class:`ReceptiveField` is the geometry of a layer's output cells on the input grid,
  per axis: the first input voxel cell ``0`` sees (``start``), the step between
  neighbouring cells (``stride``, the "jump") and the number of input voxels one cell
  sees (``size``). It is composed layer by layer from the convolutions and poolings met
  and works for any number of spatial axes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BATCHNORMS",
    "DROPOUTS",
    "LOCAL",
    "POINTWISE",
    "Call",
    "ReceptiveField",
    "Trace",
    "Window",
    "feature_layers",
    "layer_receptive_field",
    "leaf_modules",
    "receptive_field",
    "trace",
    "window",
]

#: Element-wise nonlinearities.
ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU,
    nn.GELU, nn.SiLU, nn.Mish, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid,
)  # fmt: skip
#: Dropout layers (the identity in eval mode).
DROPOUTS = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)  # fmt: skip
#: Batch normalisation (per-channel affine in eval mode).
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Modules that keep the spatial grid and treat each voxel alone (in eval mode).
POINTWISE = ACTIVATIONS + DROPOUTS + BATCHNORMS + (nn.Identity,)
#: Convolutions and poolings: each output cell sees a window of the input.
LOCAL = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip


def leaf_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` without children, in module order."""
    return [m for m in model.modules() if next(m.children(), None) is None]


@dataclass
class Call:
    """One call of a leaf module in a traced forward pass.

    Attributes
    ----------
    module : torch.nn.Module
    name : str
        Its name in ``model.named_modules()`` (the type name if it has none).
    in_shape, out_shape : tuple of int
        Shapes of its one positional input and of its output; ``()`` when the call does
        not take exactly one positional argument (and no keyword) or the value is not a
        tensor.
    follows : bool
        Its one input is the very tensor the previous call returned (the model input for
        the first call).
    unchanged : bool
        With ``snapshot=True``: ``follows`` and that tensor still holds the values the
        previous call returned (nothing modified it in place between the calls).
    input, output
        The input and output themselves, kept only with ``keep=True``.
    """

    module: nn.Module
    name: str
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    follows: bool = False
    unchanged: bool = False
    input: Any = None
    output: Any = None


@dataclass
class Trace:
    """Leaf calls of one forward pass, in order.

    ``output`` is what the run returned (None when it was stopped at ``until``);
    ``returns_last`` tells whether that is the last call's output (unchanged, with
    ``snapshot=True``).
    """

    calls: list[Call] = field(default_factory=list)
    output: Any = None
    returns_last: bool = False

    @property
    def pure(self) -> bool:
        """The model is the plain composition of its leaf calls (needs ``snapshot=True``)."""
        return bool(self.calls) and self.returns_last and all(c.unchanged for c in self.calls)


class _Stop(Exception):
    """Raised by the ``until`` hook to end the traced forward pass."""


class _Recorder:
    """Hook callbacks of :func:`trace`: one :class:`Call` per leaf call."""

    def __init__(self, x: torch.Tensor, names: dict[int, str], keep: bool, snapshot: bool):
        self.calls: list[Call] = []
        self.open: list[Call] = []
        self.names, self.keep, self.snapshot = names, keep, snapshot
        self.prev: Any = x
        self.values = x.clone() if snapshot else None
        self.stopped = False

    def is_prev(self, value: Any) -> tuple[bool, bool]:
        """(``value`` is the previous output, ... and it holds the values it had then)."""
        follows = isinstance(value, torch.Tensor) and value is self.prev
        unchanged = follows and self.snapshot and torch.equal(value, self.values)
        return bool(follows), bool(unchanged)

    def pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.stopped:
            return
        x = args[0] if len(args) == 1 and not kwargs else None
        call = Call(module, self.names.get(id(module), type(module).__name__), _shape(x))
        call.follows, call.unchanged = self.is_prev(x)
        call.input = x if self.keep else None
        self.calls.append(call)
        self.open.append(call)

    def post(self, _module: nn.Module, _args: tuple, output: Any) -> None:
        if self.stopped:
            return
        call = self.open.pop()
        call.out_shape = _shape(output)
        call.output = output if self.keep else None
        self.prev = output
        if self.snapshot:
            self.values = output.clone() if isinstance(output, torch.Tensor) else None

    def stop(self, _module: nn.Module, _args: tuple, _output: Any) -> None:
        """Hook of ``until``: record nothing more and end the forward pass."""
        self.stopped = True
        raise _Stop


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


def trace(
    model: nn.Module,
    x: torch.Tensor,
    *,
    run: Callable[[torch.Tensor], Any] | None = None,
    until: nn.Module | None = None,
    keep: bool = False,
    snapshot: bool = False,
) -> Trace:
    """Run ``model`` on ``x`` once, without gradients, and record its leaf-module calls.

    Parameters
    ----------
    model : torch.nn.Module
        Its mode (train/eval) is left as it is.
    x : torch.Tensor
        The input batch (one sample is usually enough).
    run : callable, optional
        What to run on ``x`` (default ``model``), e.g. a wrapper that checks the output.
    until : torch.nn.Module, optional
        Stop the forward pass as soon as this sub-module returns (its calls and those of
        its children are recorded; the rest of the model does not run).
    keep : bool
        Keep every call's input and output tensors in the trace.
    snapshot : bool
        Check that each input still holds the values the previous call returned
        (:attr:`Call.unchanged`, :attr:`Trace.pure`); costs a copy of every output.

    Returns
    -------
    Trace
    """
    recorder = _Recorder(x, {id(m): n for n, m in model.named_modules()}, keep, snapshot)
    handles = []
    out = None
    try:
        for leaf in leaf_modules(model):
            handles.append(leaf.register_forward_pre_hook(recorder.pre, with_kwargs=True))
            handles.append(leaf.register_forward_hook(recorder.post))
        if until is not None:
            handles.append(until.register_forward_hook(recorder.stop))
        with torch.no_grad():
            out = (run or model)(x)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    result = Trace(recorder.calls, None if recorder.stopped else out)
    if not recorder.stopped:
        follows, unchanged = recorder.is_prev(out)
        result.returns_last = unchanged if snapshot else follows
    return result


#: Poolings: each block of a convolutional network usually ends with one.
POOLINGS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
)  # fmt: skip


def feature_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """The layers a class activation map can be taken at, with their feature grids.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        An input batch ``(N, C, *spatial)``; only its first sample is run.

    Returns
    -------
    list of (str, tuple of int)
        In forward order, every activation or pooling leaf module whose output keeps the
        input's spatial axes, with the shape of its feature grid. A module called twice
        is listed once, at its last call (the output a forward hook keeps, and whose
        geometry :func:`layer_receptive_field` gives); one whose output is flat at any
        call (an activation shared with a dense head) is not listed.
    """
    found: dict[str, tuple[int, ...]] = {}
    flat: set[str] = set()
    for call in trace(model, x[:1]).calls:
        if not isinstance(call.module, ACTIVATIONS + POOLINGS):
            continue
        if len(call.out_shape) != x.dim():
            flat.add(call.name)
            continue
        found.pop(call.name, None)
        found[call.name] = tuple(call.out_shape[2:])
    return [(name, grid) for name, grid in found.items() if name not in flat]


def _ntuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


@dataclass(frozen=True)
class Window:
    """The input window of a convolution or pooling, per spatial axis.

    ``padding`` is the padding before each axis (PyTorch pads ``"same"`` convolutions
    with ``dilation * (kernel - 1) // 2`` voxels before, the rest after).
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def reach(self) -> tuple[int, ...]:
        """Input extent of one output, minus one: ``dilation * (kernel - 1)``."""
        return tuple(d * (k - 1) for d, k in zip(self.dilation, self.kernel, strict=True))


def window(module: nn.Module, ndim: int) -> Window | None:
    """The :class:`Window` of a module of :data:`LOCAL` with ``ndim`` spatial axes, else None."""
    if not isinstance(module, LOCAL):
        return None
    kernel = _ntuple(module.kernel_size, ndim)
    dilation = _ntuple(getattr(module, "dilation", 1), ndim)
    padding = module.padding
    if isinstance(padding, str):
        reach = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        padding = [r // 2 for r in reach] if padding == "same" else 0
    stride = _ntuple(module.stride or module.kernel_size, ndim)
    return Window(kernel, stride, _ntuple(padding, ndim), dilation)


@dataclass(frozen=True)
class ReceptiveField:
    """Where the output cells of a layer sit on the input grid, per spatial axis.

    Output cell ``i`` sees the input voxels ``start + stride * i`` to
    ``start + stride * i + size - 1`` (``start`` is negative where padding is seen).
    ``exact`` is False when a module whose geometry is unknown was met on the way
    (``start``, ``stride`` and ``size`` then describe the layers before it).
    """

    start: tuple[int, ...]
    stride: tuple[int, ...]
    size: tuple[int, ...]
    exact: bool = True

    @classmethod
    def identity(cls, ndim: int) -> ReceptiveField:
        """The geometry of the input itself (``ndim`` spatial axes)."""
        return cls((0,) * ndim, (1,) * ndim, (1,) * ndim)

    @property
    def offset(self) -> tuple[float, ...]:
        """Input coordinate of the centre of output cell 0 (cell ``i``: ``offset + stride * i``)."""
        return tuple(s + (n - 1) / 2 for s, n in zip(self.start, self.size, strict=True))

    def then(self, module: nn.Module) -> ReceptiveField:
        """The geometry after one more module (unknown modules make it inexact)."""
        if not self.exact or isinstance(module, POINTWISE):
            return self
        win = window(module, len(self.start))
        if win is None:
            return ReceptiveField(self.start, self.stride, self.size, exact=False)
        # per axis, with j the input voxels between cells of the layer before: padding
        # moves the first cell back by p cells, a window reaches r = dilation * (kernel
        # - 1) cells further, and the new cells are s = stride cells apart
        old = zip(self.start, self.stride, self.size, strict=True)
        new = zip(win.padding, win.reach, win.stride, strict=True)
        rows = [
            (a - p * j, j * s, n + r * j) for (a, j, n), (p, r, s) in zip(old, new, strict=True)
        ]
        return ReceptiveField(*(tuple(column) for column in zip(*rows, strict=True)))


def receptive_field(modules: Iterable[nn.Module], ndim: int) -> ReceptiveField:
    """Compose the geometry of ``modules`` applied one after the other.

    Parameters
    ----------
    modules : iterable of torch.nn.Module
        In forward order, e.g. ``[c.module for c in trace(model, x).calls]``.
    ndim : int
        Number of spatial axes.

    Returns
    -------
    ReceptiveField
    """
    field_ = ReceptiveField.identity(ndim)
    for module in modules:
        field_ = field_.then(module)
    return field_


def layer_receptive_field(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> ReceptiveField:
    """The geometry of the output of ``layer``, a sub-module of ``model``, on the input grid.

    ``model(x[:1])`` is traced and every leaf called up to the last call of ``layer``
    (``layer`` itself, or its children, included) is composed in call order. For a
    module called more than once (one activation shared by several blocks) that is the
    geometry of its last call's output, the one a forward hook that stores each output
    keeps (:func:`brainmaps.attribution.grad_cam.layer_activations`).

    Parameters
    ----------
    model : torch.nn.Module
    layer : torch.nn.Module
        A leaf (``Conv3d``, ``ReLU``, ...) or a block of ``model``.
    x : torch.Tensor
        An input batch ``(N, C, *spatial)`` (only the first sample is run).

    Returns
    -------
    ReceptiveField
        ``offset + stride * i`` is the input coordinate of feature voxel ``i``, per axis.
    """
    calls = trace(model, x[:1]).calls
    inside = {id(m) for m in layer.modules()}
    last = max((i for i, c in enumerate(calls) if id(c.module) in inside), default=len(calls) - 1)
    return receptive_field([c.module for c in calls[: last + 1]], x.dim() - 2)
