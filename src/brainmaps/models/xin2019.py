"""The three-block 3D CNN of Xin et al. (2019), as used by Kan et al. (2020)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models.base import check_model_input
from brainmaps.models.registry import register_model

__all__ = ["Xin2019"]

_KERNEL = 3  # Conv3d kernel (no padding): each conv trims 2 voxels per axis
_POOL = 2  # MaxPool3d kernel and stride (floor mode)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"Xin2019 parameter {name} must be a positive integer, got {value!r}.")
    return value


def _int_tuple(name: str, value: Any, length: int | None = None) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(
            f"Xin2019 parameter {name} must be a sequence of positive integers, got {value!r}."
        ) from None
    if not items or (length is not None and len(items) != length):
        expected = f"{length} positive integers" if length else "at least one positive integer"
        raise ConfigError(f"Xin2019 parameter {name} must hold {expected}, got {value!r}.")
    return tuple(
        _positive_int(f"{name}[{i}]", int(v) if _is_int(v) else v) for i, v in enumerate(items)
    )


def _is_int(value: Any) -> bool:
    """True for integer-like values (Python/NumPy ints and integral floats from YAML)."""
    try:
        return not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError):
        return False


def min_input_size(n_blocks: int) -> int:
    """Smallest edge length that survives ``n_blocks`` conv(3, no padding) + pool(2) blocks.

    Parameters
    ----------
    n_blocks : int
        Number of convolutional blocks.

    Returns
    -------
    int
        4 for one block, 10 for two, 22 for three.
    """
    size = 1
    for _ in range(n_blocks):
        size = _POOL * size + (_KERNEL - 1)
    return size


def _feature_shape(input_shape: tuple[int, ...], n_blocks: int) -> tuple[int, ...]:
    shape = input_shape
    for _ in range(n_blocks):
        shape = tuple((s - (_KERNEL - 1)) // _POOL for s in shape)
    return shape


@register_model("xin2019")
class Xin2019(nn.Module):
    """Three-block 3D CNN for whole-brain classification or regression.

    Each block is ``Conv3d(3x3x3, no padding) -> BatchNorm3d -> ReLU -> MaxPool3d(2)``
    with 32, 64 and 128 channels; the head is ``Flatten -> Dropout(0.5) -> Linear``.
    For a 1 x 58 x 70 x 58 input and two classes it has exactly 322,818 parameters,
    the network Kan et al. trained and explained on the HCP T1 volumes.

    Blocks are addressable by name for attribution hooks: ``features.block1`` ..
    ``features.block<n>``, each with ``conv``, ``bn``, ``relu`` (not in-place) and
    ``pool``, then ``classifier`` (``flatten``, ``dropout``, ``fc``).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for a T1 volume).
    n_classes : int
        Output units: the number of classes, or 1 for a regression output.
    input_shape : sequence of 3 int
        Spatial shape of the inputs; fixes the size of the final linear layer.
    channels : sequence of int
        Output channels of the blocks; its length sets the number of blocks.
    dropout : float
        Dropout probability before the linear layer.

    Attributes
    ----------
    config : dict
        The constructor arguments (lists, not tuples), enough to rebuild the model
        with ``create_model("xin2019", **model.config)``.
    target_layer : str
        Name of the last block's activation, the default layer for Grad-CAM.

    Raises
    ------
    ConfigError
        On invalid parameter values.
    ShapeError
        If ``input_shape`` is too small for the blocks (the minimum is given).

    References
    ----------
    .. [1] J. Xin, Y. Zhang, Y. Tang, Y. Yang, "Brain Differences Between Men and Women:
       Evidence From Deep Learning", Frontiers in Neuroscience 13:185, 2019.
    .. [2] M. Kan et al., "Interpretation of 3D CNNs for Brain MRI Data Classification",
       AIST 2020, arXiv:2006.15969.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 2,
        input_shape: Sequence[int] = (58, 70, 58),
        channels: Sequence[int] = (32, 64, 128),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        widths = _int_tuple("channels", channels)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not (0.0 <= dropout < 1.0)
        ):
            raise ConfigError(f"Xin2019 parameter dropout must be in [0, 1), got {dropout!r}.")
        out_shape = _check_input_shape(shape, len(widths))
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
            (f"block{i + 1}", _block(a, b))
            for i, (a, b) in enumerate(zip(widths_in, widths, strict=True))
        ]
        self.features = nn.Sequential(OrderedDict(blocks))
        n_features = widths[-1] * out_shape[0] * out_shape[1] * out_shape[2]
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                dropout=nn.Dropout(float(dropout)),
                fc=nn.Linear(n_features, n_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch ``(N, C, X, Y, Z)`` to logits (or regression outputs) ``(N, n_classes)``.

        Raises
        ------
        ShapeError
            If the input is not 5-D or its channel/spatial shape differs from the model's.
        """
        check_model_input(self, x)
        return self.classifier(self.features(x))


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv3d(in_channels, out_channels, kernel_size=_KERNEL),
            bn=nn.BatchNorm3d(out_channels),
            relu=nn.ReLU(inplace=False),
            pool=nn.MaxPool3d(_POOL),
        )
    )


def _check_input_shape(shape: tuple[int, ...], n_blocks: int) -> tuple[int, ...]:
    out_shape = _feature_shape(shape, n_blocks)
    if min(out_shape) < 1:
        minimum = min_input_size(n_blocks)
        raise ShapeError(
            f"Xin2019 parameter input_shape={list(shape)} is too small for {n_blocks} blocks: "
            f"every axis needs at least {minimum} voxels. Use a larger grid or fewer "
            "channels entries (blocks)."
        )
    return out_shape
