"""The input check every registered network shares."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.exceptions import ShapeError

__all__ = ["check_model_input"]


def check_model_input(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse inputs that are not ``(N, in_channels, *input_shape)`` for ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A registered network with ``config["in_channels"]`` and ``input_shape``.
    x : torch.Tensor

    Raises
    ------
    ShapeError
        If ``x`` is not 5-D or its channel/spatial shape differs from the model's; the
        message names the network's class.
    """
    expected = (model.config["in_channels"], *model.input_shape)
    if x.dim() != 5 or tuple(x.shape[1:]) != expected:
        raise ShapeError(
            f"{type(model).__name__} expects inputs of shape (N, "
            f"{', '.join(map(str, expected))}), got {tuple(x.shape)}; resample the volumes "
            "to the model grid or rebuild the model with matching input_shape/in_channels."
        )
