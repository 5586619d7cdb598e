"""Incremental inference for occlusion: recompute only what an occluded cube changes.

An occluded cube changes, in each convolution or pooling layer, only the outputs whose
receptive field reaches it. For a network that starts with a chain of local layers
(``Conv3d``, ``MaxPool3d``, ``AvgPool3d``) and point-wise ones (eval-mode
``BatchNorm3d``, activations, eval-mode dropout), the unoccluded activations of a
subject are computed once; for each occluded copy, every local layer is then evaluated
on the small crop of its input that feeds the changed outputs only (the unoccluded
activation with the copy's changed patch pasted in). The patch grows layer by layer
with the receptive field, as in Krypton (Nakandala et al., SIGMOD 2019). After the last
local layer the patch is pasted into the full unoccluded feature map and the rest of
the network (flatten, global pooling, linear layers...) runs on whole feature maps.

The chain is discovered from the module tree in forward order: one traced forward pass
(:func:`brainmaps.models.tracing.trace`) records the calls of the leaf modules, and the
network qualifies when each leaf takes exactly the previous leaf's output (same tensor,
same values) and the model returns the last leaf's output. Anything else (skip
connections, functional operations between modules) falls back to plain batched
forward passes of whole occluded copies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.models.tracing import BATCHNORMS, POINTWISE, Call, Trace, Window, window
from brainmaps.models.tracing import trace as trace_calls

__all__ = ["OcclusionEngine", "Sites", "box_mask", "paste"]


@dataclass(frozen=True)
class LocalStep(Window):
    """A convolution or pooling layer evaluated on explicitly padded crops."""

    module: nn.Module
    pad_value: float
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    channels: tuple[int, int]  # (in, out)

    def pads(self) -> list[tuple[int, int]]:
        """(before, after) padding per axis, enough for every output's receptive field."""
        sizes = zip(self.padding, self.stride, self.reach, self.in_size, self.out_size, strict=True)
        return [(p, max(0, (m - 1) * s + r + 1 - n - p)) for p, s, r, n, m in sizes]

    def apply(self, crop: torch.Tensor) -> torch.Tensor:
        """Evaluate the layer, without its own padding, on a padded crop."""
        m = self.module
        if isinstance(m, nn.Conv3d):
            return F.conv3d(crop, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, nn.MaxPool3d):
            return F.max_pool3d(crop, self.kernel, self.stride, 0, self.dilation)
        return F.avg_pool3d(crop, self.kernel, self.stride, 0, False, True, m.divisor_override)


def _local_step(call: Call) -> LocalStep | None:
    """Describe a supported conv/pool call, or None."""
    m, nd = call.module, len(call.in_shape) - 2
    if nd != 3 or len(call.out_shape) != 5:
        return None
    win = window(m, nd)
    if isinstance(m, nn.Conv3d) and m.padding_mode == "zeros":
        supported, pad_value = m.padding != "same" or not any(r % 2 for r in win.reach), 0.0
    elif isinstance(m, nn.MaxPool3d):
        supported, pad_value = not (m.ceil_mode or m.return_indices), -float("inf")
    elif isinstance(m, nn.AvgPool3d):
        supported = not m.ceil_mode and (m.count_include_pad or not any(win.padding))
        pad_value = 0.0
    else:
        return None
    if not supported:
        return None
    sizes = {"in_size": call.in_shape[2:], "out_size": call.out_shape[2:]}
    channels = (call.in_shape[1], call.out_shape[1])
    step = LocalStep(**asdict(win), module=m, pad_value=pad_value, channels=channels, **sizes)
    expected = tuple(
        (n + 2 * p - r - 1) // s + 1
        for n, p, r, s in zip(step.in_size, step.padding, step.reach, step.stride, strict=True)
    )
    return step if expected == step.out_size else None


def _is_pointwise(call: Call) -> bool:
    m = call.module
    if call.in_shape != call.out_shape:
        return False
    if isinstance(m, BATCHNORMS):
        return not m.training and m.track_running_stats and m.running_mean is not None
    return isinstance(m, POINTWISE) and not m.training


@dataclass
class Plan:
    """The incremental prefix (point-wise modules and local steps) and the tail modules."""

    steps: list[nn.Module | LocalStep]
    tail: list[nn.Module]
    final_shape: tuple[int, ...]
    tail_numel: int  # largest tail output per sample


def build_plan(trace: Trace) -> Plan | None:
    """Split a pure chain into an incremental prefix and a tail, or None if unsupported."""
    if not trace.pure:
        return None
    steps: list[nn.Module | LocalStep] = []
    final_shape: tuple[int, ...] = ()
    for call in trace.calls:
        local = _local_step(call)
        if local is None and not _is_pointwise(call):
            break
        steps.append(local if local is not None else call.module)
        final_shape = call.out_shape
    if not any(isinstance(s, LocalStep) for s in steps):
        return None
    tail = trace.calls[len(steps) :]
    tail_numel = max((_numel(c.out_shape) for c in tail), default=0)
    return Plan(steps, [c.module for c in tail], final_shape, tail_numel)


def _numel(shape: tuple[int, ...]) -> int:
    """Elements per sample of a batched shape."""
    return int(np.prod(shape[1:])) if shape else 0


def box_mask(lo: torch.Tensor, hi: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Boolean ``(B, *size)`` masks, true inside ``[lo, hi)`` per axis (rows of ``(B, nd)``)."""
    mask = torch.ones((lo.shape[0],) + (1,) * len(size), dtype=torch.bool, device=lo.device)
    for axis, length in enumerate(size):
        grid = torch.arange(length, device=lo.device)
        inside = (grid >= lo[:, axis, None]) & (grid < hi[:, axis, None])
        mask = mask & _along(inside, axis, len(size))
    return mask


def _along(t: torch.Tensor, axis: int, nd: int) -> torch.Tensor:
    """View a ``(B, n)`` tensor as ``(B, 1, .., n, .., 1)`` with ``n`` on spatial ``axis``."""
    shape = [t.shape[0]] + [1] * nd
    shape[1 + axis] = t.shape[1]
    return t.view(shape)


class Sites:
    """An activation ``(1, C, *dims)`` stored as rows ``(sites, C)`` (channels last).

    Boxes of many copies are then cut out with one row gather, and recomputed patches
    pasted in with one row scatter, whatever the number of copies.
    """

    def __init__(self, activation: torch.Tensor) -> None:
        self.dims = tuple(activation.shape[2:])
        self.rows = activation[0].flatten(1).t().contiguous()  # (sites, C)
        self._offsets: dict[tuple[int, ...], torch.Tensor] = {}
        strides = [int(np.prod(self.dims[a + 1 :])) for a in range(len(self.dims))]
        self.strides = torch.tensor(strides, device=activation.device)

    def boxes(self, corners: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Rows ``(B * prod(size), C)`` of the boxes of ``size`` at ``corners`` ``(B, nd)``."""
        if size not in self._offsets:
            axes = [torch.arange(n, device=corners.device) for n in size]
            grids = torch.meshgrid(*axes, indexing="ij")
            steps = self.strides.tolist()
            self._offsets[size] = sum(
                g.reshape(-1) * st for g, st in zip(grids, steps, strict=True)
            )
        index = (corners @ self.strides)[:, None] + self._offsets[size][None, :]
        return self.rows.index_select(0, index.reshape(-1))


def paste(
    rows: torch.Tensor,
    size: tuple[int, ...],
    corners: torch.Tensor,
    patch: torch.Tensor,
    patch_corners: torch.Tensor,
) -> torch.Tensor:
    """Overwrite box rows (from :meth:`Sites.boxes`) with each copy's patch where they overlap.

    Returns the ``(B, C, *size)`` boxes (a channels-last view of ``rows``).
    """
    n, channels, extent = patch.shape[0], patch.shape[1], patch.shape[2:]
    rel = patch_corners - corners
    valid: torch.Tensor | bool = True
    source: torch.Tensor | int = 0
    for axis, length in enumerate(size):
        q = torch.arange(length, device=rows.device) - rel[:, axis, None]
        valid = valid & _along((q >= 0) & (q < extent[axis]), axis, len(size))
        source = source * extent[axis] + _along(q.clamp(0, extent[axis] - 1), axis, len(size))
    first = torch.arange(n, device=rows.device) * int(np.prod(extent))
    source = source + first.view(-1, *[1] * len(size))
    valid = torch.as_tensor(valid).expand(n, *size).reshape(-1)
    patch_rows = patch.movedim(1, -1).reshape(-1, channels)
    target = valid.nonzero().squeeze(1)
    picked = torch.as_tensor(source).expand(n, *size).reshape(-1)[target]
    rows.index_copy_(0, target, patch_rows.index_select(0, picked))
    return rows.view(n, *size, channels).movedim(-1, 1)


def _ceil_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return -((-a) // b)


@dataclass
class _StepGeometry:
    crop_start: torch.Tensor  # (n, nd) corner of each window's input crop (padded coords)
    crop_size: tuple[int, ...]
    patch_start: torch.Tensor  # (n, nd) corner of the incoming patch (padded coords)
    out_size: tuple[int, ...]  # size of the recomputed output patch


@dataclass
class _Geometry:
    window: tuple[int, ...]  # input patch size (the window, clipped to the volume)
    input_start: torch.Tensor  # (n, nd) corner of each window's input patch
    steps: list[_StepGeometry]
    final_start: torch.Tensor  # (n, nd) corner of the last patch in the final map


def _geometry(plan: Plan, boxes: np.ndarray, shape: tuple[int, ...], device) -> _Geometry:
    """Changed region and recomputed patch of every window in every local layer.

    The changed region ``[lo, hi)`` is exact; the patch has one size per layer (the
    largest region over all windows) so copies can be batched, placed to contain the
    region and to stay inside the feature map.
    """
    tensor = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
    lo, hi = boxes[..., 0], boxes[..., 1]
    size = np.minimum((hi - lo).max(0), shape)
    start = np.minimum(lo, np.asarray(shape) - size)
    geometry = _Geometry(tuple(int(v) for v in size), tensor(start), [], tensor(start))
    for step in plan.steps:
        if not isinstance(step, LocalStep):
            continue
        s, p, r = (np.asarray(v) for v in (step.stride, step.padding, step.reach))
        n_out = np.asarray(step.out_size)
        o_lo = np.maximum(0, _ceil_div(lo + p - r, s))
        o_hi = np.minimum(n_out, (hi - 1 + p) // s + 1)
        o_hi = np.where(hi > lo, np.maximum(o_hi, o_lo), o_lo)
        out_size = np.clip((o_hi - o_lo).max(0), 1, n_out)
        out_start = np.clip(np.minimum(o_lo, n_out - out_size), 0, None)
        crop_size = tuple(int(v) for v in (out_size - 1) * s + r + 1)
        sizes = tuple(int(v) for v in out_size)
        geometry.steps.append(
            _StepGeometry(tensor(out_start * s), crop_size, tensor(start + p), sizes)
        )
        lo, hi, start = o_lo, o_hi, out_start
    geometry.final_start = tensor(start)
    return geometry


def _copy_numel(plan: Plan | None, geometry: _Geometry | None, trace: Trace, shape) -> int:
    """Estimated elements held per occluded copy while a batch goes through the network."""
    if plan is None or geometry is None:
        largest = max((_numel(c.in_shape) + _numel(c.out_shape) for c in trace.calls), default=0)
        return 3 * int(np.prod(shape)) + largest
    local = [s for s in plan.steps if isinstance(s, LocalStep)]
    layers = max(
        3 * step.channels[0] * int(np.prod(g.crop_size))
        + 2 * step.channels[1] * int(np.prod(g.out_size))
        for step, g in zip(local, geometry.steps, strict=True)
    )
    head = 3 * shape[0] * int(np.prod(geometry.window))
    return head + layers + 3 * _numel(plan.final_shape) + 2 * plan.tail_numel


class OcclusionEngine:
    """Model outputs for every occluded copy of one subject, in memory-bounded batches.

    ``model`` is in eval mode; ``example`` ``(1, C, *D)`` is used to trace it; ``boxes``
    ``(n, nd, 2)`` are the windows ``[start, end)`` in voxels. With ``incremental`` (and
    a network that allows it, see the module docstring) only the changed part of the
    local layers is recomputed; otherwise whole occluded copies run. A batch holds at
    most ``max_batch`` copies and at most ``memory_bound_mb`` MiB of estimated activation
    memory (inputs, crops, patches and outputs of every layer), but at least one copy.
    ``mode`` ("incremental" or "full") and ``batch_size`` tell what was chosen.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        boxes: np.ndarray,
        *,
        incremental: bool = True,
        max_batch: int = 64,
        memory_bound_mb: float = 1024.0,
    ) -> None:
        self.model = model
        self.shape = tuple(example.shape[1:])
        self.boxes = torch.as_tensor(boxes, dtype=torch.long, device=example.device)
        trace = trace_calls(model, example, snapshot=True)
        self.plan = build_plan(trace) if incremental else None
        self.geometry = None
        if self.plan is not None:
            self.geometry = _geometry(self.plan, np.asarray(boxes), self.shape[1:], example.device)
        self.mode = "full" if self.plan is None else "incremental"
        per_copy = _copy_numel(self.plan, self.geometry, trace, self.shape) * example.element_size()
        fits = int(memory_bound_mb * 2**20 // max(per_copy, 1))
        self.batch_size = max(1, min(int(max_batch), fits))

    def outputs(self, x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        """Model outputs ``(n, K)`` of the ``n`` occluded copies of ``x`` ``(1, C, *D)``.

        ``fill`` ``(C,)`` holds the value written into the window of each channel.
        """
        with torch.no_grad():
            state = self._prepare(x) if self.plan is not None else None
            out = []
            for first in range(0, self.boxes.shape[0], self.batch_size):
                part = slice(first, first + self.batch_size)
                if state is None:
                    batch = self._full(x, fill, part)
                else:
                    batch = self._incremental(fill, part, *state)
                out.append(batch.reshape(len(self.boxes[part]), -1))
        return torch.cat(out)

    def _full(self, x: torch.Tensor, fill: torch.Tensor, part: slice) -> torch.Tensor:
        box = self.boxes[part]
        mask = box_mask(box[..., 0], box[..., 1], self.shape[1:])
        return self.model(
            torch.where(mask.unsqueeze(1), fill.view(1, -1, *[1] * (mask.dim() - 1)), x)
        )

    def _prepare(self, x: torch.Tensor) -> tuple[Sites, list[Sites], Sites]:
        """Unoccluded activations: input, padded input of each local layer, final map."""
        bases, h = [], x
        for step in self.plan.steps:
            if isinstance(step, LocalStep):
                pads = [v for pair in reversed(step.pads()) for v in pair]
                bases.append(Sites(F.pad(h, pads, value=step.pad_value)))
                h = step.module(h)
            else:
                h = step(h)
        return Sites(x), bases, Sites(h)

    def _incremental(self, fill, part, inputs, bases, final) -> torch.Tensor:
        g, box = self.geometry, self.boxes[part]
        start = g.input_start[part]
        rows = inputs.boxes(start, g.window)
        inside = box_mask(box[..., 0] - start, box[..., 1] - start, g.window)
        rows = torch.where(inside.reshape(-1, 1), fill, rows)
        patch = rows.view(len(start), *g.window, -1).movedim(-1, 1)
        layer = 0
        for step in self.plan.steps:
            if not isinstance(step, LocalStep):
                patch = step(patch)
                continue
            sg = g.steps[layer]
            corners = sg.crop_start[part]
            crop = bases[layer].boxes(corners, sg.crop_size)
            patch = step.apply(paste(crop, sg.crop_size, corners, patch, sg.patch_start[part]))
            layer += 1
        zero = torch.zeros_like(start)
        h = paste(final.boxes(zero, final.dims), final.dims, zero, patch, g.final_start[part])
        for module in self.plan.tail:
            h = module(h)
        return h
