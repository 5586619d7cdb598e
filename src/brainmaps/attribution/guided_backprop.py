"""Guided Backpropagation with every ReLU of the network hooked."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution.base import AttributionMethod, hooks, register_method
from brainmaps.attribution.gradient import input_gradients

__all__ = ["GuidedBackprop"]


def _guided(_module, grad_input, _grad_output):
    # For a ReLU, grad_input = grad_output * (input > 0); keeping only its positive part
    # gives Springenberg et al.'s rule: positive gradients through positive inputs.
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


@register_method("guided_backprop")
class GuidedBackprop(AttributionMethod):
    """Guided Backpropagation: only positive gradients flow back through ReLUs.

    At every ``nn.ReLU`` the backward pass keeps the gradient where both the ReLU's
    input and the incoming gradient are positive. Every ``nn.ReLU`` module is hooked,
    whatever its name (MONAI's version only hooks modules called "relu" and silently
    misses the others); in-place ReLUs are switched to out-of-place for the call and
    restored. ReLUs applied as functions (``torch.relu`` in ``forward``) cannot be
    hooked: write them as modules. The attention map is ``ReLU(gradient)`` summed over
    input channels, as in Kan et al. (``attribute(..., keep_channels=True)``: one map per
    input channel).

    Parameters
    ----------
    model : torch.nn.Module

    References
    ----------
    .. [1] J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for
       Simplicity: The All Convolutional Net", ICLR workshop 2015.
    .. [2] M. Kan et al., "Interpretation of 3D CNNs for Brain MRI Data Classification",
       AIST 2020.
    """

    channel_maps = True

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
        inplace = [(m, m.inplace) for m in relus]
        try:
            with hooks() as handles:
                for m in relus:
                    m.inplace = False
                    handles.append(m.register_full_backward_hook(_guided))
                grad = input_gradients(self, x, targets)
        finally:
            for m, flag in inplace:
                m.inplace = flag
        return self._reduce_channels(grad.clamp(min=0))
