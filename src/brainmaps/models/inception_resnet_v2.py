"""The 3D Inception-ResNet-v2 of BrainImageNet (Lu et al.), as a brainmaps model.

Lu et al. trained a 3D adaptation of Keras' Inception-ResNet-v2 (Szegedy et al. 2017)
on grey-matter density and volume maps (2 channels, 96 x 120 x 86 voxels) of 85,721
scans, first for sex, then transferred to Alzheimer's disease. This module rebuilds the
network of their ``code/keras_applications/Inception_resnet_v2_3D.py``
(``InceptionResNetV2``) in PyTorch, with the head of their training scripts
(global average pooling, dropout 0.5, one dense layer).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models.base import check_model_input
from brainmaps.models.inception_transfer_head import TransferHead, transfer_head_grid
from brainmaps.models.registry import register_model
from brainmaps.models.xin2019 import _int_tuple, _positive_int

__all__ = ["HEADS", "BatchNormNoScale", "Concat", "InceptionResNetV2", "min_input_size"]

#: Keras' BatchNormalization defaults (epsilon 1e-3, moving-average momentum 0.99).
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
#: Residual scales of blocks A, B and C (the last block C uses 1.0 and no activation).
SCALES = (0.17, 0.1, 0.2)
#: Numbers of A, B and C blocks of the paper's network.
_DEFAULT_BLOCKS = (5, 10, 5)
#: ``head`` values: the full network, or Lu et al.'s transfer head after the stem.
HEADS = ("full", "transfer")


def _valid(size: int, kernel: int = 3, stride: int = 1) -> int:
    return (size - kernel) // stride + 1


def _grids(size: int) -> tuple[int, int, int, int]:
    """Edge lengths after the stem's first split, the stem, reduction A and reduction B.

    A value below 1 (or an intermediate below 3) means the axis is too short.
    """
    s = _valid(size)  # 3x3x3 valid conv
    s = _valid(s, stride=2) if s >= 3 else 0  # max-pool / conv 3, stride 2
    t = _valid(s) if s >= 3 else 0  # 3x3x3 valid convs of the stem's second split
    stem = _valid(t, stride=2) if t >= 3 else 0
    red_a = _valid(stem, stride=2) if stem >= 3 else 0
    red_b = _valid(red_a, stride=2) if red_a >= 3 else 0
    return s, stem, red_a, red_b


def min_input_size() -> int:
    """Smallest edge length the stem and both reductions accept.

    Returns
    -------
    int
        37 voxels per axis: the feature grid of the last block is then 1 voxel wide
        (96 x 120 x 86 gives 4 x 6 x 4).
    """
    return next(s for s in range(1, 1024) if _grids(s)[-1] >= 1)


def _scaled(channels: int, width: float) -> int:
    return max(1, math.floor(channels * width + 0.5))


class BatchNormNoScale(nn.BatchNorm3d):
    """``BatchNorm3d`` with a learnt shift but no scale (Keras ``scale=False``).

    The scale is a buffer of ones, not a parameter: it is never trained, is not counted
    in ``parameters()`` and keeps the ``weight`` attribute that code folding BatchNorm
    into convolutions reads. The shift (Keras' beta) is the learnt ``bias``. Epsilon
    and momentum are Keras' defaults (1e-3; a moving average of 0.99, i.e. PyTorch
    momentum 0.01).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=_BN_EPS, momentum=_BN_MOMENTUM, affine=True)
        weight = self.weight
        del self.weight
        self.register_buffer("weight", torch.ones_like(weight, requires_grad=False))


class Concat(nn.Module):
    """Concatenate branch outputs along the channel axis.

    A module rather than a ``torch.cat`` call on purpose: the tracer of
    :mod:`brainmaps.models.tracing` composes receptive fields along a chain of layers, which
    parallel branches are not. This leaf has no known geometry, so layers after it are
    marked inexact and class activation maps are spread evenly over the input instead of
    being placed by a wrongly composed receptive field.
    """

    def forward(self, *branches: torch.Tensor) -> torch.Tensor:
        """Return ``torch.cat(branches, dim=1)``."""
        return torch.cat(branches, dim=1)


class ConvBN(nn.Sequential):
    """``Conv3d`` (no bias) -> :class:`BatchNormNoScale` -> optional ReLU (``conv3d_bn``).

    ``same`` padding (stride 1) pads ``kernel // 2`` on both sides; ``valid`` pads none.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int | Sequence[int],
        stride: int = 1,
        padding: str = "same",
        relu: bool = True,
    ) -> None:
        kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        pad = tuple(k // 2 for k in kernel) if padding == "same" else 0
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv3d(in_channels, out_channels, kernel, stride, pad, bias=False)),
            ("bn", BatchNormNoScale(out_channels)),
        ]
        if relu:
            layers.append(("relu", nn.ReLU(inplace=False)))
        super().__init__(OrderedDict(layers))
        self.out_channels = out_channels


def _chain(in_channels: int, specs: Sequence[tuple]) -> nn.Sequential:
    """A branch of :class:`ConvBN` from ``(out_channels, kernel[, stride, padding])``."""
    layers = []
    for i, spec in enumerate(specs):
        out, kernel, *rest = spec
        layers.append((f"conv{i + 1}", ConvBN(in_channels, out, kernel, *rest)))
        in_channels = out
    return nn.Sequential(OrderedDict(layers))


def _out(branch: nn.Module, in_channels: int) -> int:
    """Output channels of a branch (a max-pooling passes its input channels through)."""
    if isinstance(branch, nn.MaxPool3d):
        return in_channels
    return branch[-1].out_channels


class _Mixed(nn.Module):
    """Parallel branches on one input, concatenated (the stem's and reductions' splits)."""

    def __init__(self, in_channels: int, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.concat = Concat()
        self.out_channels = sum(_out(b, in_channels) for b in branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run every branch on ``x`` and concatenate."""
        return self.concat(*(branch(x) for branch in self.branches))


class Stem(nn.Sequential):
    """The 3D stem: 3x3x3 convs, two stride-2 splits and a factorised 1x7x1/1x1x7/7x1x1 branch.

    Ends at 512 channels (``width=1``) on a grid of 21 x 27 x 19 for 96 x 120 x 86 inputs.
    """

    def __init__(self, in_channels: int, width: float) -> None:
        c = lambda n: _scaled(n, width)  # noqa: E731
        conv1 = ConvBN(in_channels, c(64), 3, padding="valid")
        conv2 = ConvBN(c(64), c(96), 3)
        split1 = _Mixed(c(96), [nn.MaxPool3d(3, stride=2), _chain(c(96), [(c(96), 3, 2, "valid")])])
        split2 = _Mixed(
            split1.out_channels,
            [
                _chain(split1.out_channels, [(c(96), 1), (c(128), 3, 1, "valid")]),
                _chain(
                    split1.out_channels,
                    [
                        (c(96), 1),
                        (c(96), (1, 7, 1)),
                        (c(96), (1, 1, 7)),
                        (c(96), (7, 1, 1)),
                        (c(128), 3, 1, "valid"),
                    ],
                ),
            ],
        )
        split3 = _Mixed(
            split2.out_channels,
            [
                _chain(split2.out_channels, [(c(256), 3, 2, "valid")]),
                nn.MaxPool3d(3, stride=2),
            ],
        )
        super().__init__(
            OrderedDict(conv1=conv1, conv2=conv2, split1=split1, split2=split2, split3=split3)
        )
        self.out_channels = split3.out_channels


class InceptionResNetBlock(nn.Module):
    """One residual Inception block: ``act(x + scale * up(concat(branches(x))))``.

    ``kind`` is ``"a"`` (Keras ``block35``), ``"b"`` (``block17``) or ``"c"``
    (``block8``). ``up`` is a 1x1x1 convolution with bias and no BatchNorm back to the
    input's channels; ``act`` is a ReLU, or the identity with ``activation=False``.

    Attributes
    ----------
    scale : float
        The factor of the residual branch.
    """

    def __init__(
        self, channels: int, kind: str, scale: float, width: float, activation: bool = True
    ) -> None:
        super().__init__()
        c = lambda n: _scaled(n, width)  # noqa: E731
        if kind == "a":
            specs = [
                [(c(32), 1)],
                [(c(32), 1), (c(32), 3)],
                [(c(32), 1), (c(48), 3), (c(64), 3)],
            ]
        elif kind == "b":
            specs = [
                [(c(192), 1)],
                [(c(128), 1), (c(148), (1, 7, 1)), (c(170), (1, 1, 7)), (c(192), (7, 1, 1))],
            ]
        elif kind == "c":
            specs = [
                [(c(192), 1)],
                [(c(192), 1), (c(212), (1, 3, 1)), (c(234), (1, 1, 3)), (c(256), (3, 1, 1))],
            ]
        else:  # pragma: no cover - internal
            raise ValueError(kind)
        self.kind = kind
        self.scale = float(scale)
        self.branches = nn.ModuleList(_chain(channels, spec) for spec in specs)
        self.concat = Concat()
        mixed = sum(spec[-1][0] for spec in specs)
        self.up = nn.Conv3d(mixed, channels, 1, bias=True)
        self.relu = nn.ReLU(inplace=False) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x`` (same shape)."""
        mixed = self.concat(*(branch(x) for branch in self.branches))
        return self.relu(x + self.scale * self.up(mixed))


def _reduction_a(channels: int, width: float) -> _Mixed:
    c = lambda n: _scaled(n, width)  # noqa: E731
    return _Mixed(
        channels,
        [
            _chain(channels, [(c(384), 3, 2, "valid")]),
            _chain(channels, [(c(256), 1), (c(256), 3), (c(384), 3, 2, "valid")]),
            nn.MaxPool3d(3, stride=2),
        ],
    )


def _reduction_b(channels: int, width: float) -> _Mixed:
    c = lambda n: _scaled(n, width)  # noqa: E731
    return _Mixed(
        channels,
        [
            _chain(channels, [(c(256), 1), (c(384), 3, 2, "valid")]),
            _chain(channels, [(c(256), 1), (c(288), 3, 2, "valid")]),
            _chain(channels, [(c(256), 1), (c(288), 3), (c(320), 3, 2, "valid")]),
            nn.MaxPool3d(3, stride=2),
        ],
    )


def _blocks(value: Any) -> tuple[int, int, int]:
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    ok = len(items) == 3 and all(
        not isinstance(v, bool) and isinstance(v, int | float) and int(v) == v and v >= 0
        for v in items
    )
    if not ok or int(items[2]) < 1:
        raise ConfigError(
            f"InceptionResNetV2 parameter blocks must be 3 counts (blocks A, B, C; A and B "
            f">= 0, C >= 1, the last block C being the linear one), got {value!r}; the "
            f"paper's network uses {list(_DEFAULT_BLOCKS)}."
        )
    return int(items[0]), int(items[1]), int(items[2])


@register_model("inception_resnet_v2")
class InceptionResNetV2(nn.Module):
    """3D Inception-ResNet-v2 of BrainImageNet for whole-brain classification or regression.

    The structure follows Lu et al.'s Keras code (``InceptionResNetV2`` in
    ``Inception_resnet_v2_3D.py``); at ``width=1`` the channel counts are theirs:

    * ``features.stem``: 3x3x3 convs (64, 96), a stride-2 split (max-pool | conv 96), a
      split into ``1x1x1 -> 3x3x3`` (128) and ``1x1x1 -> 1x7x1 -> 1x1x7 -> 7x1x1 ->
      3x3x3`` (128), a stride-2 split (conv 256 | max-pool): 512 channels;
    * ``features.block_a``: 5 Inception-ResNet-A blocks (``block35``, residual scale 0.17);
    * ``features.reduction_a``: conv 384 | 1x1x1 -> 3x3x3 -> conv 384 | max-pool, stride 2:
      1280 channels;
    * ``features.block_b``: 10 Inception-ResNet-B blocks (``block17``, 1x7x1 / 1x1x7 /
      7x1x1 factorised, scale 0.1);
    * ``features.reduction_b``: three conv branches (384, 288, 320) | max-pool, stride 2:
      2272 channels;
    * ``features.block_c``: 5 Inception-ResNet-C blocks (``block8``, scale 0.2), the last
      one with scale 1 and no activation, as in Keras' Inception-ResNet-v2;
    * ``features.conv_7b``: 1x1x1 conv to 1536 channels (BatchNorm, ReLU);
    * ``classifier``: ``gap`` (global average pooling) -> ``flatten`` -> ``dropout``
      (0.5) -> ``fc`` (``n_classes`` outputs), the head of their training scripts.

    Every convolution but the residual ``up`` projections is ``Conv3d`` without bias ->
    :class:`BatchNormNoScale` (Keras ``scale=False``: a learnt shift, no scale) ->
    ReLU. ``same`` convolutions are padded, ``valid`` ones (all strided ones) are not;
    96 x 120 x 86 inputs give grids of 21 x 27 x 19 (stem), 10 x 13 x 9 (reduction A)
    and 4 x 6 x 4 (reduction B). Their sex model ended in ``Dense(1, sigmoid)``; as the
    other brainmaps classifiers, this one outputs ``n_classes`` logits (2 for a binary
    task, soft-maxed by the training loop), or 1 for regression. With 2 input channels
    at 96 x 120 x 86 (the parameter count does not depend on the grid) it has 54,014,076
    parameters for 2 outputs and 54,012,539 for 1 output, the trainable weights of their
    Keras sex/AD model; Keras' total of 54,054,623 (the "54.05 M") adds the 42,084
    BatchNorm moving means and variances, buffers here.

    Parameters
    ----------
    in_channels : int
        Input channels (2 in the paper: grey-matter density and volume, wc1 and mwc1).
    n_classes : int
        Output units: the number of classes, or 1 for a regression output.
    input_shape : sequence of 3 int
        Spatial shape of the inputs (96 x 120 x 86 in the paper); at least
        :func:`min_input_size` (37) voxels per axis. GAP would accept other sizes; the
        inputs are checked against it so a model is not applied to another grid.
    width : float
        Multiplier of every channel count (rounded, at least 1); 1.0 is the paper's
        network, small values (e.g. 0.125) give cheap variants for tests.
    blocks : sequence of 3 int
        Number of A, B and C blocks (default 5, 10, 5); the last C block is always the
        linear one (scale 1, no activation).
    dropout : float
        Dropout probability before the linear layer.
    head : {"full", "transfer"}
        ``"full"`` (default): the whole network above. ``"transfer"``: the stem followed
        by the head Lu et al. trained on AD after transferring the stem of their sex model
        (:class:`~brainmaps.models.inception_transfer_head.TransferHead` as
        ``features.head``: max-pool, two 256-channel 3x3x3 convs, a [max-pool | strided
        conv] split, 512 channels at ``width=1``; then the same ``classifier``); the
        A/B/C blocks and reductions are absent (``blocks`` is ignored). Inputs need at
        least 69 voxels per axis. ``brainmaps train --transfer stem`` picks it.

    Attributes
    ----------
    config : dict
        Constructor arguments, enough to rebuild the model with
        ``create_model("inception_resnet_v2", **model.config)``.
    target_layer : str
        ``features.conv_7b.relu``: the last feature maps, pooled by ``classifier.gap``;
        the default layer of Grad-CAM and the layer CAM weights with ``classifier.fc``.

    Raises
    ------
    ConfigError
        On invalid parameter values.
    ShapeError
        If ``input_shape`` is too small for the stem and the two reductions.

    Notes
    -----
    The parallel branches are joined by :class:`Concat` modules, so the receptive-field
    geometry of layers after the first join is unknown to
    :mod:`brainmaps.models.tracing`: maps taken there are spread evenly over the input
    grid rather than placed at receptive-field centres.

    References
    ----------
    .. [1] B. Lu, H.-X. Li, Z.-K. Chang et al. (C.-G. Yan), "A practical Alzheimer's
       disease classifier via brain imaging-based deep learning on 85,721 samples",
       Journal of Big Data 9:101, 2022 (preprint: "A practical computer aided diagnosis
       system for Alzheimer's disease ... transfer-learned deep learning on 85,721
       samples"); code: https://github.com/Chaogan-Yan/BrainImageNet.
    .. [2] C. Szegedy, S. Ioffe, V. Vanhoucke, A. Alemi, "Inception-v4, Inception-ResNet
       and the Impact of Residual Connections on Learning", AAAI 2017.
    """

    def __init__(
        self,
        in_channels: int = 2,
        n_classes: int = 2,
        input_shape: Sequence[int] = (96, 120, 86),
        width: float = 1.0,
        blocks: Sequence[int] = _DEFAULT_BLOCKS,
        dropout: float = 0.5,
        head: str = "full",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ConfigError(
                f"InceptionResNetV2 parameter head must be one of {HEADS}, got {head!r}."
            )
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        if (
            isinstance(width, bool)
            or not isinstance(width, int | float)
            or not math.isfinite(width)
            or width <= 0
        ):
            raise ConfigError(
                f"InceptionResNetV2 parameter width must be a positive number (1.0 is the "
                f"paper's network), got {width!r}."
            )
        n_a, n_b, n_c = _blocks(blocks)
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not (0.0 <= dropout < 1.0)
        ):
            raise ConfigError(
                f"InceptionResNetV2 parameter dropout must be in [0, 1), got {dropout!r}."
            )
        if head == "transfer":
            _check_transfer_shape(shape)
        too_small = [s for s in shape if _grids(s)[-1] < 1]
        if too_small and head == "full":
            raise ShapeError(
                f"InceptionResNetV2 parameter input_shape={list(shape)} is too small for the "
                f"stem and the two reductions: every axis needs at least {min_input_size()} "
                "voxels. Use a finer grid (the paper used 96 x 120 x 86)."
            )
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "n_classes": n_classes,
            "input_shape": list(shape),
            "width": float(width),
            "blocks": [n_a, n_b, n_c],
            "dropout": float(dropout),
        }
        if head != "full":  # recorded only when used, so earlier checkpoints keep their config
            self.config["head"] = head
        self.input_shape = shape
        self.target_layer = "features.conv_7b.relu"
        width = float(width)

        stem = Stem(in_channels, width)
        if head == "transfer":
            self._transfer_head(stem, width, float(dropout), n_classes)
            return
        ch = stem.out_channels
        block_a = nn.Sequential(
            OrderedDict(
                (f"a{i + 1}", InceptionResNetBlock(ch, "a", SCALES[0], width)) for i in range(n_a)
            )
        )
        reduction_a = _reduction_a(ch, width)
        ch = reduction_a.out_channels
        block_b = nn.Sequential(
            OrderedDict(
                (f"b{i + 1}", InceptionResNetBlock(ch, "b", SCALES[1], width)) for i in range(n_b)
            )
        )
        reduction_b = _reduction_b(ch, width)
        ch = reduction_b.out_channels
        c_blocks = [
            (f"c{i + 1}", InceptionResNetBlock(ch, "c", SCALES[2], width)) for i in range(n_c - 1)
        ]
        last = InceptionResNetBlock(ch, "c", 1.0, width, activation=False)
        block_c = nn.Sequential(OrderedDict([*c_blocks, (f"c{n_c}", last)]))
        n_features = _scaled(1536, width)
        self.features = nn.Sequential(
            OrderedDict(
                stem=stem,
                block_a=block_a,
                reduction_a=reduction_a,
                block_b=block_b,
                reduction_b=reduction_b,
                block_c=block_c,
                conv_7b=ConvBN(ch, n_features, 1),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(float(dropout)),
                fc=nn.Linear(n_features, n_classes),
            )
        )

    def _transfer_head(self, stem: Stem, width: float, dropout: float, n_classes: int) -> None:
        """Build ``features`` as the stem + :class:`TransferHead` (``head="transfer"``)."""
        head = TransferHead(stem.out_channels, _scaled(256, width))
        self.features = nn.Sequential(OrderedDict(stem=stem, head=head))
        self.target_layer = "features.head.split.concat"
        self.classifier = nn.Sequential(
            OrderedDict(
                gap=nn.AdaptiveAvgPool3d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(dropout),
                fc=nn.Linear(head.out_channels, n_classes),
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


def _check_transfer_shape(shape: tuple[int, ...]) -> None:
    """Every axis must survive the stem and Lu et al.'s transfer head."""
    if any(transfer_head_grid(_grids(s)[1]) < 1 for s in shape):
        smallest = next(s for s in range(1, 1024) if transfer_head_grid(_grids(s)[1]) >= 1)
        raise ShapeError(
            f"InceptionResNetV2 parameter input_shape={list(shape)} is too small for the stem "
            f"and the transfer head (head='transfer'): every axis needs at least {smallest} "
            "voxels. Use a finer grid (the paper used 96 x 120 x 86)."
        )
