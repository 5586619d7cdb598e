"""Plain input gradients (saliency maps)."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution.base import AttributionMethod, register_method, target_scores
from brainmaps.exceptions import ConfigError

__all__ = ["Gradient", "input_gradients"]


def input_gradients(method: AttributionMethod, x: torch.Tensor, targets: torch.Tensor):
    """Gradient of each sample's target output with respect to its input, ``(N, C, ...)``.

    Samples do not interact in eval mode, so one backward pass of the summed scores
    gives every sample's own gradient.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(method._forward(x), targets)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


def check_bool(owner: str, name: str, value) -> bool:
    """Validate a boolean option."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner} option {name} must be true or false, got {value!r}.")
    return value


@register_method("gradient")
class Gradient(AttributionMethod):
    """Gradient of the target output with respect to the input voxels.

    The saliency map of Simonyan et al.: how much a small change of each voxel
    changes the class score (the logit, not the probability; for regression models, the
    output). Channels are summed.

    Parameters
    ----------
    model : torch.nn.Module
    absolute : bool
        Return ``|gradient|`` (default, as in Simonyan et al.) instead of the signed
        gradient.

    Notes
    -----
    ``attribute(..., keep_channels=True)`` gives one map per input channel.

    References
    ----------
    .. [1] K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks:
       Visualising Image Classification Models and Saliency Maps", ICLR workshop 2014.
    """

    channel_maps = True

    def __init__(self, model: nn.Module, *, absolute: bool = True) -> None:
        super().__init__(model)
        self.absolute = check_bool("gradient", "absolute", absolute)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        grad = input_gradients(self, x, targets)
        return self._reduce_channels(grad.abs() if self.absolute else grad)
