"""SFCN, the lightweight brain-age network of Peng et al. (2021), as a brainmaps model.

Peng et al.'s Simple Fully Convolutional Network won the PAC 2019 brain-age challenge
and reached 2.14 years MAE on UK Biobank with about 3 million parameters. This module
rebuilds ``SFCN`` of their ``dp_model/model_files/sfcn.py``
(github.com/ha-ha-ha-han/UKBiobank_deep_pretrain) for brainmaps' tasks.
"""

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

__all__ = ["SFCN", "min_input_size"]

_POOL = 2  # MaxPool3d(2, stride 2) of every block but the last (floor mode)


def min_input_size(n_blocks: int = 6) -> int:
    """Smallest edge length that survives the max-poolings of ``n_blocks`` blocks.

    Parameters
    ----------
    n_blocks : int
        Number of blocks (all but the last pool by 2; the convolutions keep the grid).

    Returns
    -------
    int
        ``2 ** (n_blocks - 1)``: 32 voxels per axis for the paper's six blocks (the last
        grid is then 1 voxel wide; 160 x 192 x 160 gives 5 x 6 x 5).
    """
    return _POOL ** (n_blocks - 1)


@register_model("sfcn")
class SFCN(nn.Module):
    """Simple Fully Convolutional Network for brain age (Peng et al. 2021).

    Six blocks with 32, 64, 128, 256, 256 and 64 channels: the first five are
    ``Conv3d(3x3x3, padding 1) -> BatchNorm3d -> MaxPool3d(2) -> ReLU`` (pooling before
    the activation, as in their code), the last ``Conv3d(1x1x1) -> BatchNorm3d ->
    ReLU``. The head is ``AdaptiveAvgPool3d(1) -> Dropout(0.5) -> Linear``: their
    ``AvgPool3d([5, 6, 5])`` is the global average over the last grid at their
    160 x 192 x 160 input, taken here over whatever grid remains so that every input
    size works; their final 1x1x1 convolution of the pooled 1 x 1 x 1 grid is the same
    map as this linear layer (its weight is theirs, ``weight.flatten(1)``).

    With 1 x 160 x 192 x 160 inputs the network has 2,952,936 parameters with their
    40 age-bin outputs and 2,950,401 with one regression output ("about 3 million").

    Blocks are addressable for hooks: ``features.block1`` .. ``features.block<n>`` with
    ``conv``, ``bn``, ``pool`` (not in the last block) and ``relu``; the head is
    ``classifier`` (``gap``, ``flatten``, ``dropout``, ``fc``), so CAM applies too.

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a T1 volume).
    n_classes : int
        Output units: 1 for plain brain-age regression (MSE on standardised ages, as
        brainmaps trains regression), else the number of classes (logits).
    input_shape : sequence of 3 int
        Spatial shape of the inputs (default their 160 x 192 x 160 at 1 mm); at least
        :func:`min_input_size` voxels per axis. Checked against the inputs, so a model
        is not applied to another grid by mistake.
    channels : sequence of int
        Output channels of the blocks (at least two); all but the last pool.
    dropout : float
        Dropout probability before the output layer (0.5; 0 is their ``dropout=False``).
    bins : int, optional
        Peng et al.'s soft-classification head: ``bins`` logits over age bins (their
        brain-age model: 40 one-year bins, 42-82 years, trained with a Kullback-Leibler
        loss against Gaussian soft labels and read as the expected bin centre of the
        softmax). The KL loss over soft labels is not wired into brainmaps' training, so
        this head is for loading their weights and as a transfer source only; it needs
        ``n_classes=1`` (it replaces the single regression output).

    Attributes
    ----------
    config : dict
        Constructor arguments, enough to rebuild the model with
        ``create_model("sfcn", **model.config)``.
    target_layer : str
        ``features.block<n>.relu``: the last feature maps (5 x 6 x 5 at 160 x 192 x 160),
        the default layer of Grad-CAM and the layer CAM weights with ``classifier.fc``.

    Raises
    ------
    ConfigError
        On invalid parameter values.
    ShapeError
        If ``input_shape`` is smaller than :func:`min_input_size` along an axis.

    References
    ----------
    .. [1] H. Peng, W. Gong, C. F. Beckmann, A. Vedaldi, S. M. Smith, "Accurate brain age
       prediction with lightweight deep neural networks", Medical Image Analysis
       68:101871, 2021.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        input_shape: Sequence[int] = (160, 192, 160),
        channels: Sequence[int] = (32, 64, 128, 256, 256, 64),
        dropout: float = 0.5,
        bins: int | None = None,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        widths = _int_tuple("channels", channels)
        rate = _check_options(widths, dropout, bins, n_classes)
        smallest = min_input_size(len(widths))
        if min(shape) < smallest:
            raise ShapeError(
                f"SFCN parameter input_shape={list(shape)} is too small for {len(widths)} "
                f"blocks: every axis needs at least {smallest} voxels (each of the "
                f"{len(widths) - 1} max-poolings halves it). Use a larger grid or fewer "
                "channels entries (blocks)."
            )
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "input_shape": list(shape),
            "channels": list(widths),
            "dropout": rate,
            "bins": bins,
        }
        self.input_shape = shape
        self.target_layer = f"features.block{len(widths)}.relu"
        widths_in = (in_channels, *widths[:-1])
        blocks = [
            (f"block{i + 1}", _block(a, b, last=i == len(widths) - 1))
            for i, (a, b) in enumerate(zip(widths_in, widths, strict=True))
        ]
        self.features = nn.Sequential(OrderedDict(blocks))
        self.classifier = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(rate),
                fc=nn.Linear(widths[-1], bins or n_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, X, Y, Z)`` inputs to ``(N, n_classes)`` (or ``(N, bins)``) outputs.

        The outputs are logits; Peng et al.'s ``log_softmax`` over the bins is left to
        the caller (``torch.log_softmax(model(x), dim=1)``).

        Raises
        ------
        ShapeError
            If the input is not 5-D or its channel/spatial shape differs from the model's.
        """
        check_model_input(self, x)
        return self.classifier(self.features(x))


def _check_options(widths: tuple[int, ...], dropout: Any, bins: Any, n_classes: int) -> float:
    if len(widths) < 2:
        raise ConfigError(
            f"SFCN parameter channels must hold at least two widths, got {list(widths)}; "
            "the default is [32, 64, 128, 256, 256, 64]."
        )
    if isinstance(dropout, bool) or not isinstance(dropout, int | float):
        raise ConfigError(f"SFCN parameter dropout must be in [0, 1), got {dropout!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"SFCN parameter dropout must be in [0, 1), got {dropout!r}.")
    if bins is not None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ConfigError(
                f"SFCN parameter bins must be None or an integer >= 2 (Peng et al. used 40 "
                f"age bins), got {bins!r}."
            )
        if n_classes != 1:
            raise ConfigError(
                f"SFCN parameter bins={bins} is a brain-age (regression) head, but "
                f"n_classes={n_classes}; use n_classes=1 with bins, or drop bins for a "
                "classifier."
            )
    return float(dropout)


def _block(in_channels: int, out_channels: int, *, last: bool) -> nn.Sequential:
    kernel = 1 if last else 3
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)),
        ("bn", nn.BatchNorm3d(out_channels)),
    ]
    if not last:
        layers.append(("pool", nn.MaxPool3d(_POOL, stride=_POOL)))
    layers.append(("relu", nn.ReLU(inplace=False)))
    return nn.Sequential(OrderedDict(layers))
