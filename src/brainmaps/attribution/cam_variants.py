"""HiResCAM and LayerCAM: class activation maps that keep the gradient's spatial detail.

Both take the activations ``A`` of one layer and the gradients ``∂y/∂A`` of the target
output, as Grad-CAM does (they share its flow, :class:`~brainmaps.attribution.grad_cam.
GradientCAM`: receptive-field-aligned upsampling), but multiply them voxel by voxel
instead of averaging the gradient over space first. Because they keep the gradient's
detail, shallower layers serve them well: their default layer is ``"auto"``
(:func:`~brainmaps.attribution.grad_cam.auto_layer`, the deepest layer whose feature grid
keeps 8 voxels per axis), chosen with ``brainmaps layers`` on the demo run (HiResCAM's
conjoined map: ROC AUC 0.848 at ``features.block2.relu``, 0.598 at Grad-CAM's
``features.block3.relu``).
"""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution.base import register_method
from brainmaps.attribution.grad_cam import GradientCAM

__all__ = ["HiResCAM", "LayerCAM"]


class _FineCAM(GradientCAM):
    """The variants' shared default: ``layer="auto"``."""

    #: Recorded with the maps when no layer is given (maps made before the default became
    #: ``"auto"`` were taken at the last block: ``brainmaps explain`` refuses to mix them).
    recorded_layer = "auto"

    def default_layer(self, model: nn.Module) -> str:
        """``"auto"``: the layer is chosen per input size (:func:`auto_layer`)."""
        return "auto"


@register_method("hires_cam")
class HiResCAM(_FineCAM):
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
        Name of the module whose output is used (``model.named_modules()``). Default
        ``"auto"``: the deepest activation or pooling layer whose feature grid keeps 8
        voxels per axis at the input's size (``features.block2.relu`` of ``xin2019`` at
        36x44x36, ``features.block3.relu`` at 58x70x58).
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
class LayerCAM(_FineCAM):
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
        Name of the module whose output is used (``model.named_modules()``). Default
        ``"auto"``, as :class:`HiResCAM`.

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
