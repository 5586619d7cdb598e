"""Class Activation Mapping for networks ending in global average pooling + linear."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution._spatial import layer_geometry, upsample_aligned
from brainmaps.attribution.base import AttributionMethod, find_module, register_method
from brainmaps.attribution.grad_cam import default_layer, layer_activations
from brainmaps.exceptions import ConfigError
from brainmaps.models.soft_bins import SoftBinExpectation

__all__ = ["CAM"]


@register_method("cam")
class CAM(AttributionMethod):
    """Class activation maps: the last feature maps weighted by the output layer.

    For a network whose last feature maps ``A_k`` are globally average-pooled and fed to
    a linear layer with weights ``W``, the class score is ``y_c = Σ_k W_ck mean(A_k) +
    b_c``, so ``M_c = Σ_k W_ck A_k`` shows where the evidence for class ``c`` lies (its
    mean plus the bias is the score). Signed values are kept; the map is upsampled to the
    input grid with receptive-field alignment, like Grad-CAM. On such a network
    Grad-CAM at the same layer equals ``ReLU(M_c)`` divided by the number of feature
    voxels (tested).

    Parameters
    ----------
    model : torch.nn.Module
        A network ending in ``AdaptiveAvgPool3d(1) -> Flatten -> (Dropout) -> Linear``,
        such as ``gap_cnn``.
    layer : str, optional
        The feature layer that is pooled (default: the model's ``target_layer``).

    Raises
    ------
    ConfigError
        If the model has no global average pooling, its last linear layer does not
        take the layer's channels, or its output is not that layer's (SFCN's
        ``soft_bins`` expectation).

    References
    ----------
    .. [1] B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Learning Deep
       Features for Discriminative Localization", CVPR 2016.
    .. [2] Ling, "Class Activation Mapping on Diffusion MRI".
    """

    def __init__(self, model: nn.Module, *, layer: str | None = None) -> None:
        super().__init__(model)
        self.layer_name = layer if layer is not None else default_layer(model)
        self.layer = find_module(model, self.layer_name)
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool3d)]
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not pools or not linears or any(_size(p) != 1 for p in pools[-1:]):
            raise ConfigError(
                f"CAM needs a network ending in global average pooling and one linear layer "
                f"(such as gap_cnn); {type(model).__name__} has none. Use grad_cam instead."
            )
        if any(isinstance(m, SoftBinExpectation) for m in model.modules()):
            raise ConfigError(
                f"CAM reads the output from the last linear layer's weights, but "
                f"{type(model).__name__} was trained with soft_bins: its output is the "
                "softmax-weighted mean of the bin centres, which is not linear in that "
                "layer. Use grad_cam (or another gradient method), or train without "
                "--model-option soft_bins."
            )
        self.fc = linears[-1]

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        geometry = layer_geometry(self.model, self.layer, x)
        with torch.no_grad():
            _, acts = layer_activations(self, self.layer, x)
        if acts.shape[1] != self.fc.in_features:
            raise ConfigError(
                f"layer {self.layer_name!r} has {acts.shape[1]} channels but the last linear "
                f"layer takes {self.fc.in_features}; give the layer that is pooled (layer=...)."
            )
        weights = self.fc.weight[targets].view(*targets.shape, -1, *(1,) * (acts.dim() - 2))
        cam = (weights * acts).sum(dim=1)
        return upsample_aligned(cam, tuple(x.shape[2:]), geometry)


def _size(pool: nn.AdaptiveAvgPool3d) -> int:
    size = pool.output_size
    sizes = size if isinstance(size, tuple) else (size,)
    return int(max(s for s in sizes if s is not None))
