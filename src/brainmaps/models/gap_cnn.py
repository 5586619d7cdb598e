"""A Xin-style 3D CNN ending in global average pooling, the network CAM needs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models.base import check_model_input
from brainmaps.models.registry import register_model
from brainmaps.models.xin2019 import _int_tuple, _positive_int

__all__ = ["GapCNN"]


@register_model("gap_cnn")
class GapCNN(nn.Module):
    """Convolution blocks, global average pooling and one linear layer.

    Blocks are ``Conv3d(3x3x3, padding 1) -> BatchNorm3d -> ReLU`` followed by
    ``MaxPool3d(2)`` in every block but the last, so the last block's feature maps keep
    as much resolution as possible. Global average pooling (GAP) over all three axes
    then feeds a linear layer: the architecture Class Activation Mapping (CAM) is defined
    for, where the class score is a weighted sum of spatially averaged feature maps.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a T1 volume, 3 for a grey-matter / white-matter / CSF stack).
    n_classes : int
        Output units: the number of classes, or 1 for a regression output.
    input_shape : sequence of 3 int
        Spatial shape of the inputs. GAP makes the network accept any size; this value
        is checked against the inputs so a model is not applied to another grid by
        mistake.
    channels : sequence of int
        Output channels of the blocks; its length sets the number of blocks.
    dropout : float
        Dropout probability before the linear layer.

    Attributes
    ----------
    config : dict
        Constructor arguments, enough to rebuild the model with
        ``create_model("gap_cnn", **model.config)``.
    target_layer : str
        ``features.block<n>.relu``: the last feature maps, the layer CAM reads.

    References
    ----------
    .. [1] B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba, "Learning Deep
       Features for Discriminative Localization", CVPR 2016.
    .. [2] Ling, "Class Activation Mapping on Diffusion MRI".
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        input_shape: Sequence[int] = (58, 70, 58),
        channels: Sequence[int] = (16, 32, 64, 64),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        widths = _int_tuple("channels", channels)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ConfigError(f"GapCNN parameter dropout must be in [0, 1), got {dropout!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"GapCNN parameter dropout must be in [0, 1), got {dropout!r}.")
        smallest = 2 ** (len(widths) - 1)
        if min(shape) < smallest:
            raise ShapeError(
                f"GapCNN parameter input_shape={list(shape)} is too small for {len(widths)} "
                f"blocks: every axis needs at least {smallest} voxels; use fewer blocks."
            )
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "input_shape": list(shape),
            "channels": list(widths),
            "dropout": float(dropout),
        }
        self.input_shape = shape
        self.target_layer = f"features.block{len(widths)}.relu"
        widths_in = (in_channels, *widths[:-1])
        blocks = [
            (f"block{i + 1}", _block(a, b, pool=i < len(widths) - 1))
            for i, (a, b) in enumerate(zip(widths_in, widths, strict=True))
        ]
        self.features = nn.Sequential(OrderedDict(blocks))
        self.classifier = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(float(dropout)),
                fc=nn.Linear(widths[-1], n_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, X, Y, Z)`` inputs to ``(N, n_classes)`` outputs.

        Raises
        ------
        ShapeError
            If the input is not 5-D or its channel/spatial shape differs from the model's.
        """
        check_model_input(self, x)
        return self.classifier(self.features(x))


def _block(in_channels: int, out_channels: int, pool: bool) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)),
        ("bn", nn.BatchNorm3d(out_channels)),
        ("relu", nn.ReLU(inplace=False)),
    ]
    if pool:
        layers.append(("pool", nn.MaxPool3d(2)))
    return nn.Sequential(OrderedDict(layers))
