"""SFCN, the lightweight brain-age network of Peng et al. (2021), as a brainmaps model.

Peng et al.'s Simple Fully Convolutional Network won the PAC 2019 brain-age challenge
and reached 2.14 years MAE on UK Biobank with about 3 million parameters. This module
rebuilds ``SFCN`` of their ``dp_model/model_files/sfcn.py``
(github.com/ha-ha-ha-han/UKBiobank_deep_pretrain) for brainmaps' tasks, with their
soft-label training of brain age as an option (``soft_bins``; the bins, soft labels, KL
loss and expectation are in :mod:`brainmaps.models.soft_bins`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models.base import check_model_input
from brainmaps.models.registry import register_model
from brainmaps.models.soft_bins import SoftBinExpectation, check_width, soft_bin_range
from brainmaps.models.xin2019 import _int_tuple, _positive_int
from brainmaps.tasks import target_stats as _target_stats

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
    ``classifier`` (``gap``, ``flatten``, ``dropout``, ``fc``; ``soft_bins`` with
    soft-label training), so CAM applies too (without ``soft_bins``).

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
        A head of ``bins`` raw logits over age bins, to load Peng et al.'s published
        weights (their brain-age model: 40 one-year bins, 42-82 years) and as a transfer
        source; ``forward`` returns the logits and nothing trains them as bins. Needs
        ``n_classes=1`` (it replaces the single regression output). To train soft bins,
        use ``soft_bins``.
    soft_bins : float, optional
        Train as Peng et al. do: the bin width in target units (1: one-year bins). The
        head gets one logit per bin, the training loss is the Kullback-Leibler divergence
        of Gaussian soft labels from the softmax over the bins
        (:func:`~brainmaps.models.soft_bins.soft_labels`, renormalised over the bins),
        and ``forward`` returns one value per sample: the softmax-weighted mean of the bin
        centres, standardised with ``target_stats`` like brainmaps' regression outputs
        (so its predictions lie within the bins). Needs ``n_classes=1``, ``bin_range`` and
        ``target_stats``; :meth:`fit_config` derives the last two from the training
        targets, as ``brainmaps train --model-option soft_bins=1`` does for every fold.
    soft_sigma : float
        Standard deviation of the Gaussian soft labels in target units (Peng et al.: 1
        year); used with ``soft_bins`` only.
    bin_range : (float, float), optional
        ``(start, stop)`` of the soft bins in target units, a whole number of bins (e.g.
        ``[42, 82]``: 40 bins of 1 year). Derived by :meth:`fit_config`.
    target_stats : (float, float), optional
        ``(mean, std)`` of the training targets, with which brainmaps standardises them
        (:func:`brainmaps.tasks.target_stats`). Derived by :meth:`fit_config`.

    Attributes
    ----------
    config : dict
        Constructor arguments, enough to rebuild the model with
        ``create_model("sfcn", **model.config)`` (with the soft bins fitted).
    target_layer : str
        ``features.block<n>.relu``: the last feature maps (5 x 6 x 5 at 160 x 192 x 160),
        the default layer of Grad-CAM and the layer CAM weights with ``classifier.fc``.
    target_stats : (float, float) or None
        ``(mean, std)`` the soft bins are standardised with (``None`` without
        ``soft_bins``); :func:`~brainmaps.training.loop.train_model` refuses training
        targets with other statistics.

    Raises
    ------
    ConfigError
        On invalid parameter values; with ``soft_bins``, on a classifier
        (``n_classes > 1``), ``bins``, or a missing or bad ``bin_range`` or
        ``target_stats``.
    ShapeError
        If ``input_shape`` is smaller than :func:`min_input_size` along an axis.

    Notes
    -----
    With ``soft_bins`` the head ends in ``classifier.soft_bins``
    (:class:`~brainmaps.models.soft_bins.SoftBinExpectation`), after ``classifier.fc``.
    Gradient methods (``gradient``, ``grad_cam``, ...) explain the expected value as
    they explain any regression output. CAM refuses such a model (the expectation is not
    linear in ``classifier.fc``) and so does LRP (no rule for the softmax expectation);
    train without ``soft_bins`` to use them. The training and validation losses in
    ``history.tsv`` are then the KL divergence (``val_mae`` stays in target units), and
    the epoch with the lowest validation KL is kept.

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
        soft_bins: float | None = None,
        soft_sigma: float = 1.0,
        bin_range: Sequence[float] | None = None,
        target_stats: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        in_channels = _positive_int("in_channels", in_channels)
        n_classes = _positive_int("n_classes", n_classes)
        shape = _int_tuple("input_shape", input_shape, length=3)
        widths = _int_tuple("channels", channels)
        rate = _check_options(widths, dropout, bins, n_classes)
        soft = _soft_options(soft_bins, soft_sigma, bin_range, target_stats, n_classes, bins)
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
            **soft,
        }
        self.input_shape = shape
        self.target_stats = soft["target_stats"]
        head = None
        if soft_bins is not None:
            head = SoftBinExpectation(
                soft["bin_range"], soft["soft_bins"], soft["soft_sigma"], soft["target_stats"]
            )
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
                fc=nn.Linear(widths[-1], head.n_bins if head else bins or n_classes),
            )
        )
        if head is not None:
            self.classifier.add_module("soft_bins", head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, X, Y, Z)`` inputs to ``(N, n_classes)`` (or ``(N, bins)``) outputs.

        The outputs are logits, or with ``bins`` raw bin logits (Peng et al.'s
        ``log_softmax`` over them is left to the caller); with ``soft_bins`` they are
        ``(N, 1)`` expected values in standardised target units.

        Raises
        ------
        ShapeError
            If the input is not 5-D or its channel/spatial shape differs from the model's.
        """
        check_model_input(self, x)
        return self.classifier(self.features(x))

    def training_loss(
        self, x: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The soft-bin training loss of a batch and the model's outputs (one forward pass).

        :func:`~brainmaps.training.loop.train_model` calls it for the training and the
        validation loss instead of the task's loss.

        Parameters
        ----------
        x : torch.Tensor
            Inputs ``(N, C, X, Y, Z)``.
        targets : torch.Tensor, shape (N,)
            Standardised targets (``(y - mean) / std`` with :attr:`target_stats`).

        Returns
        -------
        (torch.Tensor, torch.Tensor) or None
            The KL loss (a scalar) and ``forward(x)``; ``None`` without ``soft_bins`` (the
            task's loss applies).
        """
        head = getattr(self.classifier, "soft_bins", None)
        if head is None:
            return None
        check_model_input(self, x)
        logits = self.classifier[:-1](self.features(x))
        return head.loss(logits, targets), head(logits)

    @classmethod
    def fit_config(cls, config: dict, targets) -> dict:
        """``config`` with the soft bins fitted to the training targets (a copy).

        Without ``soft_bins`` it is returned unchanged. Otherwise ``bin_range`` is the
        training targets' range rounded out to whole bins and padded by two bins on each
        side (:func:`~brainmaps.models.soft_bins.soft_bin_range`) and ``target_stats``
        their mean and std. Call it with the training subjects of a fold only, never with
        test subjects: ``brainmaps train`` does, and records the result in each fold's
        checkpoint, so predict, resume, serve and explain rebuild the same model.

        Parameters
        ----------
        config : dict
            Constructor arguments (e.g. ``{"n_classes": 1, "soft_bins": 1}``).
        targets : array-like
            The training targets in target units (e.g. ages in years).

        Returns
        -------
        dict

        Raises
        ------
        ConfigError
            On a bad ``soft_bins`` or ``soft_sigma``, a classification task, targets that
            span less than two bins, or a ``bin_range`` / ``target_stats`` given in the
            configuration that differs from the one the targets give.
        """
        config = dict(config)
        if config.get("soft_bins") is None:
            return config
        width = check_width("soft_bins", config["soft_bins"], what="the bin width")
        check_width("soft_sigma", config.get("soft_sigma", 1.0), what="the soft labels' sigma")
        _check_regression(width, config.get("n_classes", 1))
        fitted = {
            "bin_range": list(soft_bin_range(targets, width)),
            "target_stats": list(_target_stats(targets)),
        }
        for key, value in fitted.items():
            given = config.get(key)
            if given is not None and not np.allclose(given, value, rtol=1e-9, atol=1e-12):
                raise ConfigError(
                    f"SFCN parameter {key}={list(given)} is derived from the training targets "
                    f"({value} for these); remove it from model.options (--model-option), "
                    "brainmaps fits it for every fold."
                )
        return {**config, **fitted}


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


def _check_regression(width: float, n_classes: int) -> None:
    if n_classes != 1:
        raise ConfigError(
            f"SFCN parameter soft_bins={width:g} is Peng et al.'s soft-label regression "
            f"(brain age), but the model has n_classes={n_classes} (a classification "
            "task); drop --model-option soft_bins for a classifier, or predict a numeric "
            "target (--task regression)."
        )


def _pair(name: str, value: Any, width: float) -> list[float]:
    """``bin_range`` as (start < stop) or ``target_stats`` as (mean, std > 0), finite."""
    try:
        pair = [float(v) for v in value]
    except (TypeError, ValueError):
        pair = []
    ok = len(pair) == 2 and all(np.isfinite(pair))
    if name == "bin_range":
        ok, expected = ok and pair[0] < pair[1], "(start, stop) with start < stop"
    else:
        ok, expected = ok and pair[1] > 0, "(mean, std) with std > 0"
    if not ok:
        raise ConfigError(
            f"SFCN parameter soft_bins={width:g} needs {name} {expected} in target units, "
            f"got {value!r}; derive it from the training targets with "
            "SFCN.fit_config(config, train_targets) (brainmaps train does this per fold)."
        )
    return pair


def _soft_options(
    soft_bins: Any, soft_sigma: Any, bin_range: Any, target_stats: Any, n_classes: int, bins: Any
) -> dict:
    """The checked soft-bin entries of ``config`` (all ``None`` without ``soft_bins``)."""
    off = {"soft_bins": None, "soft_sigma": None, "bin_range": None, "target_stats": None}
    if soft_bins is None:
        if bin_range is not None or target_stats is not None:
            raise ConfigError(
                "SFCN parameters bin_range and target_stats belong to soft_bins, which is "
                "not set; add --model-option soft_bins=1 or remove them."
            )
        return off
    width = check_width("soft_bins", soft_bins, what="the bin width")
    sigma = check_width("soft_sigma", soft_sigma, what="the soft labels' sigma")
    _check_regression(width, n_classes)
    if bins is not None:
        raise ConfigError(
            f"SFCN parameters bins={bins} and soft_bins={width:g} both set the bin head; "
            "soft_bins derives the number of bins from the training targets, so drop bins."
        )
    return {
        "soft_bins": width,
        "soft_sigma": sigma,
        "bin_range": _pair("bin_range", bin_range, width),
        "target_stats": _pair("target_stats", target_stats, width),
    }


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
