"""MRInet, the brain-age base model of Hofmann et al. (2022), as a brainmaps model.

Hofmann et al. trained ensembles of a small sequential 3D CNN to predict age from T1,
FLAIR and SWI volumes (LIFE Adult study) and explained them with Layer-wise Relevance
Propagation. This module rebuilds ``MRInet.create`` of their package xai4mri
(``src/xai4mri/model/mrinets.py``, the variant without BatchNorm and with plain ReLU
that iNNvestigate can explain) in PyTorch, so that LRP applies to it unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainmaps.exceptions import ConfigError
from brainmaps.models.base import check_model_input
from brainmaps.models.registry import register_model
from brainmaps.models.xin2019 import _int_tuple, _positive_int

__all__ = ["MRInet", "pooled_size"]

_KERNEL = 3  # Conv3D kernel of every block but the last ("same" padding)
_POOL = 3  # MaxPool3D pool_size (strides 2, "same" padding)
_STRIDE = 2


def pooled_size(size: int) -> int:
    """Edge length after one of MRInet's max-poolings (3, stride 2, Keras ``"same"``).

    Parameters
    ----------
    size : int
        Edge length before the pooling (>= 1).

    Returns
    -------
    int
        ``ceil(size / 2)``: "same" pooling never drops a voxel, so every grid of at
        least one voxel per axis is accepted (198 -> 99 -> 50 -> 25 -> 13 -> 7).
    """
    return math.ceil(size / _STRIDE)


def _same_pool(shape: tuple[int, ...]) -> nn.MaxPool3d:
    """``MaxPool3D(3, strides=2, padding="same")`` of Keras for inputs of ``shape``.

    Keras pads ``max((out - 1) * 2 + 3 - n, 0)`` voxels per axis, the smaller half
    before: one on each side of an odd axis, one after an even axis. PyTorch pads
    symmetrically, so odd axes get ``padding=1`` and even axes ``padding=0`` with
    ``ceil_mode=True`` (the last window then reads one voxel past the end, which a
    max-pooling ignores); the windows are exactly Keras'.
    """
    padding = tuple(n % 2 for n in shape)
    return nn.MaxPool3d(_POOL, stride=_STRIDE, padding=padding, ceil_mode=True)


def _check_dropout(dropout: Any) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, int | float):
        raise ConfigError(f"MRInet parameter dropout must be in [0, 1), got {dropout!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"MRInet parameter dropout must be in [0, 1), got {dropout!r}.")
    return float(dropout)


def _check_bias(output_bias: Any, n_classes: int) -> float:
    if isinstance(output_bias, bool) or not isinstance(output_bias, int | float):
        raise ConfigError(
            f"MRInet parameter output_bias must be a finite number, got {output_bias!r}."
        )
    if not math.isfinite(output_bias):
        raise ConfigError(
            f"MRInet parameter output_bias must be a finite number, got {output_bias!r}."
        )
    if output_bias != 0 and n_classes != 1:
        raise ConfigError(
            f"MRInet parameter output_bias={output_bias!r} needs a regression output "
            f"(n_classes=1), got n_classes={n_classes}: the classification output has no "
            "bias (as in Hofmann et al.). Leave output_bias at 0.0 for classifiers."
        )
    return float(output_bias)


@register_model("mrinet")
class MRInet(nn.Module):
    """Sequential 3D CNN for brain-age regression (Hofmann et al. 2022), LRP-ready.

    Five blocks ``Conv3d -> ReLU -> MaxPool3d(3, stride 2, "same")``: four 3x3x3
    convolutions with "same" padding (16, 16, 32, 64 channels) and a 1x1x1 convolution
    (32 channels); then ``Flatten -> Dropout(0.5) -> Linear(64) -> ReLU -> Linear``.
    No BatchNorm, no skip connection: the network LRP was designed for. Weights are
    drawn as in Keras (Glorot-uniform kernels, zero biases).

    For xai4mri's 1 x 198 x 198 x 198 input (their pruned 1 mm FreeSurfer volumes) the
    grids are 198 -> 99 -> 50 -> 25 -> 13 -> 7 and the regression network has 781,265
    parameters.

    Blocks are addressable for hooks: ``features.block1`` .. ``features.block<n>`` with
    ``conv``, ``relu`` and ``pool``; the head is ``classifier`` (``flatten``,
    ``dropout``, ``dense``, ``relu``, ``fc``).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for one MR sequence).
    n_classes : int
        1 for brain-age regression (the main use), else the number of classes (logits;
        the softmax of the Keras model is left to the loss, as for every brainmaps model).
    input_shape : sequence of 3 int
        Spatial shape of the inputs; fixes the size of the dense layer. Any grid of at
        least one voxel per axis is valid ("same" padding never shrinks a grid to zero).
    channels : sequence of int
        Output channels of the blocks (at least two); all but the last are 3x3x3
        convolutions, the last a 1x1x1 convolution. Default ``(16, 16, 32, 64, 32)``.
    hidden : int
        Units of the hidden dense layer (64).
    dropout : float
        Dropout probability before the hidden dense layer (0.5).
    output_bias : float
        Initial bias of the regression output. Hofmann et al. set it to the mean of the
        training ages (xai4mri's ``target_bias``) so that training starts at the mean
        prediction. brainmaps trains regression on standardised targets (``(y - mean) /
        std`` of the training fold, see :func:`brainmaps.training.loop.train_model`),
        where that mean is 0, the default; give the mean age only when the targets are
        fed unstandardised. Classification outputs have no bias, as in their code, and
        accept only 0.0.

    Attributes
    ----------
    config : dict
        The constructor arguments, enough to rebuild the model with
        ``create_model("mrinet", **model.config)``.
    target_layer : str
        ``features.block<n>.relu``: the last convolution's activation (13 x 13 x 13 at
        198^3), the default layer of Grad-CAM and its variants.

    Raises
    ------
    ConfigError
        On invalid parameter values.

    Notes
    -----
    Keras' "same" max-pooling pads asymmetrically (one voxel after an even axis); each
    pooling is built with the per-axis padding that reproduces Keras' windows exactly
    (see :func:`pooled_size`), which is why the model is tied to ``input_shape``.

    References
    ----------
    .. [1] S. M. Hofmann, F. Beyer, S. Lapuschkin, O. Goltermann, M. Loeffler, K.-R.
       Müller, A. Villringer, W. Samek, A. V. Witte, "Towards the interpretability of deep
       learning models for multi-modal neuroimaging: Finding structural changes of the
       ageing brain", NeuroImage 261:119504, 2022.
    .. [2] xai4mri, ``MRInet.create`` (S. M. Hofmann), github.com/SHEscher/xai4mri.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        input_shape: Sequence[int] = (198, 198, 198),
        channels: Sequence[int] = (16, 16, 32, 64, 32),
        hidden: int = 64,
        dropout: float = 0.5,
        output_bias: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        widths = _int_tuple("channels", channels)
        if len(widths) < 2:
            raise ConfigError(
                f"MRInet parameter channels must hold at least two widths (3x3x3 blocks, "
                f"then the 1x1x1 block), got {list(widths)}; the default is [16, 16, 32, 64, 32]."
            )
        hidden = _positive_int("hidden", hidden)
        rate = _check_dropout(dropout)
        bias = _check_bias(output_bias, n_classes)
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "input_shape": list(shape),
            "channels": list(widths),
            "hidden": hidden,
            "dropout": rate,
            "output_bias": bias,
        }
        self.input_shape = shape
        self.target_layer = f"features.block{len(widths)}.relu"
        blocks, grid = [], shape
        for i, (a, b) in enumerate(zip((in_channels, *widths[:-1]), widths, strict=True)):
            kernel = _KERNEL if i < len(widths) - 1 else 1
            blocks.append((f"block{i + 1}", _block(a, b, kernel, grid)))
            grid = tuple(pooled_size(n) for n in grid)
        self.features = nn.Sequential(OrderedDict(blocks))
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                dropout=nn.Dropout(rate),
                dense=nn.Linear(widths[-1] * math.prod(grid), hidden),
                relu=nn.ReLU(inplace=False),
                fc=nn.Linear(hidden, n_classes, bias=n_classes == 1),
            )
        )
        self._init_like_keras(bias)

    def _init_like_keras(self, output_bias: float) -> None:
        """Glorot-uniform kernels and zero biases (Keras defaults); the output bias."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if self.classifier.fc.bias is not None:
            nn.init.constant_(self.classifier.fc.bias, output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, X, Y, Z)`` inputs to ``(N, n_classes)`` outputs (ages or logits).

        Raises
        ------
        ShapeError
            If the input is not 5-D or its channel/spatial shape differs from the model's.
        """
        check_model_input(self, x)
        return self.classifier(self.features(x))


def _block(
    in_channels: int, out_channels: int, kernel: int, grid: tuple[int, ...]
) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2),
            relu=nn.ReLU(inplace=False),
            pool=_same_pool(grid),
        )
    )
