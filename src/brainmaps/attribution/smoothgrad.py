"""SmoothGrad: gradients averaged over noisy copies of the input."""

from __future__ import annotations

import torch
from torch import nn

from brainmaps.attribution.base import AttributionMethod, register_method
from brainmaps.attribution.gradient import check_bool, input_gradients
from brainmaps.exceptions import ConfigError

__all__ = ["SmoothGrad", "check_positive_int"]


def check_positive_int(owner: str, name: str, value) -> int:
    """Validate a positive integer option."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner} option {name} must be a positive integer, got {value!r}.")
    return value


@register_method("smoothgrad")
class SmoothGrad(AttributionMethod):
    """Mean gradient over ``n_samples`` copies of the input with Gaussian noise added.

    The noise standard deviation is ``noise_level`` times the intensity range
    (max - min) of each input volume, as in Smilkov et al. Copies are processed
    ``batch_size`` at a time, so memory does not grow with ``n_samples``. Channels are
    summed (``attribute(..., keep_channels=True)``: one map per input channel).

    Parameters
    ----------
    model : torch.nn.Module
    n_samples : int
        Noisy copies per input.
    noise_level : float
        Noise standard deviation as a fraction of each input's intensity range
        (Smilkov et al. recommend 0.1-0.2).
    absolute : bool
        Average ``|gradient|`` (default) instead of the signed gradient.
    batch_size : int
        Noisy copies per forward/backward pass.
    seed : int
        Seed of the noise, so maps are reproducible.

    References
    ----------
    .. [1] D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg, "SmoothGrad:
       removing noise by adding noise", arXiv:1706.03825, 2017.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        n_samples: int = 25,
        noise_level: float = 0.15,
        absolute: bool = True,
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        super().__init__(model)
        self.n_samples = check_positive_int("smoothgrad", "n_samples", n_samples)
        self.batch_size = check_positive_int("smoothgrad", "batch_size", batch_size)
        if not isinstance(noise_level, int | float) or not 0 <= noise_level <= 1:
            raise ConfigError(
                f"smoothgrad option noise_level must be in [0, 1], got {noise_level!r}."
            )
        self.noise_level = float(noise_level)
        self.absolute = check_bool("smoothgrad", "absolute", absolute)
        self.seed = int(seed)

    channel_maps = True

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(self._maps_shape(x), dtype=x.dtype, device=x.device)
        for i in range(x.shape[0]):
            # One generator per sample: a sample's map does not depend on its batch.
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
            sample = x[i : i + 1]
            sd = self.noise_level * (sample.max() - sample.min())
            for start in range(0, self.n_samples, self.batch_size):
                k = min(self.batch_size, self.n_samples - start)
                noise = torch.randn((k, *sample.shape[1:]), generator=gen, device=x.device)
                grad = input_gradients(self, sample + sd * noise, targets[i].expand(k))
                grad = grad.abs() if self.absolute else grad
                total[i] += self._reduce_channels(grad, 0)
        return total / self.n_samples
