"""Where a layer's feature voxels sit on the input grid, and upsampling that respects it.

A valid (unpadded) 3x3x3 convolution followed by 2x2x2 pooling shifts the centres of
the feature voxels: feature ``i`` of Xin et al.'s third block is centred on input voxel
``8.5 + 4 i``, not on ``i * 58 / 11``. Stretching a feature map to the input size by
array shape, as most Grad-CAM code does, misplaces it by several voxels. Here each
feature voxel is placed at the centre of its receptive field and the map is
interpolated (trilinearly, separably per axis) at every input voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from brainmaps.attribution.base import hooks

__all__ = ["LayerGeometry", "layer_geometry", "upsample_aligned"]

_LOCAL = (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d)
_NEUTRAL = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.BatchNorm3d, nn.Dropout, nn.Dropout3d, nn.Identity)


@dataclass(frozen=True)
class LayerGeometry:
    """Affine map from feature index to input index, per axis: ``offset + stride * i``.

    ``exact`` is False when a layer whose geometry is unknown was met on the way (then
    the feature map is assumed to span the input evenly).
    """

    offset: tuple[float, ...]
    stride: tuple[float, ...]
    exact: bool = True


def _triple(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value, value)


def _compose(geometry: LayerGeometry, module: nn.Module) -> LayerGeometry:
    k, s = _triple(module.kernel_size), _triple(module.stride or module.kernel_size)
    p = _triple(module.padding)
    d = _triple(getattr(module, "dilation", 1))
    offset = tuple(
        o + st * (-pi + di * (ki - 1) / 2)
        for o, st, pi, di, ki in zip(geometry.offset, geometry.stride, p, d, k, strict=True)
    )
    stride = tuple(st * si for st, si in zip(geometry.stride, s, strict=True))
    return LayerGeometry(offset, stride, geometry.exact)


def layer_geometry(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> LayerGeometry:
    """Trace one forward pass and compose the geometry of every layer before ``layer``.

    Parameters
    ----------
    model : torch.nn.Module
    layer : torch.nn.Module
        A sub-module of ``model``; its output is the feature map to place.
    x : torch.Tensor
        An input batch (one sample is enough).

    Returns
    -------
    LayerGeometry
    """
    called: list[nn.Module] = []
    done = {"flag": False}

    def record(module, _inputs, _output):
        if module is layer:
            done["flag"] = True
        elif not done["flag"] and not list(module.children()):
            called.append(module)

    with hooks() as handles, torch.no_grad():
        for m in model.modules():
            handles.append(m.register_forward_hook(record))
        model(x[:1])
    geometry = LayerGeometry((0.0,) * (x.dim() - 2), (1.0,) * (x.dim() - 2))
    for module in called:
        if isinstance(module, _LOCAL):
            geometry = _compose(geometry, module)
        elif not isinstance(module, _NEUTRAL):
            return LayerGeometry(geometry.offset, geometry.stride, exact=False)
    return geometry


def _axis_weights(n_in: int, n_feat: int, offset: float, stride: float) -> np.ndarray:
    """``(n_in, n_feat)`` linear-interpolation weights, clamped at the borders."""
    coord = np.clip((np.arange(n_in) - offset) / stride, 0.0, max(n_feat - 1, 0))
    lower = np.floor(coord).astype(int)
    upper = np.minimum(lower + 1, n_feat - 1)
    frac = coord - lower
    weights = np.zeros((n_in, n_feat))
    np.add.at(weights, (np.arange(n_in), lower), 1.0 - frac)
    np.add.at(weights, (np.arange(n_in), upper), frac)
    return weights


def upsample_aligned(
    maps: torch.Tensor, size: tuple[int, ...], geometry: LayerGeometry | None
) -> torch.Tensor:
    """Interpolate feature maps ``(N, *feat)`` onto the input grid ``(N, *size)``.

    With an exact geometry each feature voxel is placed at its receptive-field centre;
    otherwise the feature grid is spread evenly over the input (``align_corners=False``
    semantics).
    """
    out = maps
    for axis, (n_in, n_feat) in enumerate(zip(size, maps.shape[1:], strict=True)):
        if geometry is not None and geometry.exact:
            offset, stride = geometry.offset[axis], geometry.stride[axis]
        else:
            stride = n_in / n_feat
            offset = (stride - 1) / 2
        w = torch.as_tensor(_axis_weights(n_in, n_feat, offset, stride), dtype=maps.dtype)
        out = torch.movedim(
            torch.tensordot(out, w.to(maps.device), dims=([axis + 1], [1])), -1, axis + 1
        )
    return out
