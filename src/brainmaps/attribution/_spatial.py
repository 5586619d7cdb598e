"""Where a layer's feature voxels sit on the input grid, and upsampling that respects it.

A valid (unpadded) 3x3x3 convolution followed by 2x2x2 pooling shifts the centres of
the feature voxels: feature ``i`` of Xin et al.'s third block is centred on input voxel
``8.5 + 4 i``, not on ``i * 58 / 11``. Stretching a feature map to the input size by
array shape, as most Grad-CAM code does, misplaces it by several voxels. Here each
feature voxel is placed at the centre of its receptive field and the map is
interpolated (trilinearly, separably per axis) at every input voxel.
"""

from __future__ import annotations

import numpy as np
import torch

from brainmaps.models.tracing import ReceptiveField
from brainmaps.models.tracing import layer_receptive_field as layer_geometry

__all__ = ["layer_geometry", "upsample_aligned"]


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
    maps: torch.Tensor, size: tuple[int, ...], geometry: ReceptiveField | None
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
