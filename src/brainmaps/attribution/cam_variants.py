"""HiResCAM and LayerCAM: class activation maps that keep the gradient's spatial detail.

Both take the activations ``A`` of one layer and the gradients ``∂y/∂A`` of the target
output, as Grad-CAM does (they share its flow, :class:`~brainmaps.attribution.grad_cam.
GradientCAM`: default layer, receptive-field-aligned upsampling), but multiply them voxel
by voxel instead of averaging the gradient over space first.
"""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution.base import register_method
from brainmaps.attribution.grad_cam import GradientCAM

__all__ = ["HiResCAM", "LayerCAM"]


@register_method("hires_cam")
class HiResCAM(GradientCAM):
    """High-resolution class activation mapping: gradient times activation, summed over
    channels.

    For the chosen layer's activations ``A`` (``K`` channels) and target output ``y`` the
    map is ``ReLU(Σ_k ∂y/∂A_k ⊙ A_k)``, element-wise: Grad-CAM without the spatial
    averaging of the gradient. When the layer feeds a dense (fully connected) head
    directly, as the last pooling of ``xin2019`` does, ``∂y/∂A`` is the head's weight
    and the map without ReLU sums to the score minus the bias: it shows where the
    network's evidence lies, while Grad-CAM's averaged weights can highlight places the
    network does not use. Through a global average pooling followed by one linear layer
    (``gap_cnn``) the gradient is constant over space and HiResCAM equals Grad-CAM
    (tested). The feature map is upsampled to the input grid like Grad-CAM's, with every
    feature voxel at the centre of its receptive field.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, optional
        Name of the module whose output is used (``model.named_modules()``). Default:
        the model's ``target_layer`` (the last block's activation for the brainmaps
        networks), else the last ``Conv3d``; the same as Grad-CAM's.
    relu : bool
        Apply the final ReLU (default, as Grad-CAM); False keeps negative evidence.

    See Also
    --------
    brainmaps.attribution.GradCAM : the gradient averaged over space first.
    LayerCAM : only the positive gradients.

    References
    ----------
    .. [1] R. L. Draelos, L. Carin, "Use HiResCAM instead of Grad-CAM for faithful
       explanations of convolutional neural networks", arXiv:2011.08891, 2020.
    """

    def _combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads * acts).sum(dim=1)


@register_method("layer_cam")
class LayerCAM(GradientCAM):
    """LayerCAM: activations weighted by their positive gradients, voxel by voxel.

    For the chosen layer's activations ``A`` (``K`` channels) and target output ``y`` the
    map is ``ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k)``. Dropping the negative gradients keeps, at
    each voxel, only the channels that raise the score, which makes the maps of shallow
    layers (fine resolution) usable; where no gradient is negative it equals
    :class:`HiResCAM` (tested). The feature map is upsampled to the input grid like
    Grad-CAM's, with every feature voxel at the centre of its receptive field.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str, optional
        Name of the module whose output is used (``model.named_modules()``). Default:
        the model's ``target_layer`` (the last block's activation for the brainmaps
        networks), else the last ``Conv3d``; the same as Grad-CAM's. Earlier blocks
        (e.g. ``features.block2.relu``) give finer maps.

    See Also
    --------
    HiResCAM : the gradients with their signs.

    References
    ----------
    .. [1] P.-T. Jiang, C.-B. Zhang, Q. Hou, M.-M. Cheng, Y. Wei, "LayerCAM: Exploring
       Hierarchical Class Activation Maps for Localization", IEEE Transactions on Image
       Processing 30:5875-5888, 2021.
    """

    def __init__(self, model: nn.Module, *, layer: str | None = None) -> None:
        super().__init__(model, layer=layer, relu=True)

    def _combine(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return (grads.clamp(min=0) * acts).sum(dim=1)
