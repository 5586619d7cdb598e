"""Soft-label regression over bins (Peng et al. 2021): bins, soft labels, KL loss, expectation.

Peng et al. train their brain-age SFCN as a soft classification: the age range is cut
into bins (40 one-year bins, 42-82 years), each age becomes the Gaussian mass in every
bin (sigma 1 year), the network outputs log-softmax over the bins, the loss is the
Kullback-Leibler divergence of the soft label from the softmax, and the prediction is the
softmax-weighted mean of the bin centres. This module holds those pieces for any network
whose head ends in one logit per bin: :func:`soft_bin_range` derives the bins from the
training targets, :func:`soft_labels` and :func:`kl_loss` are the training objective, and
:class:`SoftBinExpectation` is the output layer that turns the logits into one value per
sample, in brainmaps' standardised target units, so prediction, ensembles, bias
correction and gradient attribution see an ordinary regression output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from brainmaps.exceptions import ConfigError

__all__ = ["SoftBinExpectation", "check_width", "kl_loss", "soft_bin_range", "soft_labels"]

#: Bin widths added below the smallest and above the largest training target.
PAD_BINS = 2


def check_width(name: str, value, *, what: str) -> float:
    """A positive, finite number (a bin width or sigma in target units), as a float.

    Raises
    ------
    ConfigError
        Naming ``name``, the value and the expectation (``what`` says what it is).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(
            f"SFCN parameter {name} must be a positive number ({what}, in the target's "
            f"units, e.g. years), got {value!r}; e.g. --model-option {name}=1."
        )
    return float(value)


def soft_bin_range(targets, width: float, *, pad: int = PAD_BINS) -> tuple[float, float]:
    """The bins of a training set: ``(start, stop)`` in target units, a whole number of bins.

    ``start`` is the smallest target rounded down to a multiple of ``width`` minus ``pad``
    widths, ``stop`` the largest rounded up plus ``pad`` widths, so every training target
    lies at least ``pad`` bins from the edges (ages 44.3-79.8 with width 1 give Peng et
    al.'s 42-82 years, 40 bins).

    Parameters
    ----------
    targets : array-like
        The training targets only (never test subjects), in target units.
    width : float
        Bin width in target units.
    pad : int
        Bins added on each side.

    Returns
    -------
    (float, float)

    Raises
    ------
    ConfigError
        If the targets are not finite, or span less than two bins (a width too large for
        the data, or a constant target).
    """
    values = np.asarray(targets, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ConfigError(
            "soft_bins needs finite training targets; drop the rows with a missing or "
            "infinite target."
        )
    low, high = float(values.min()), float(values.max())
    if high - low < 2 * width:
        raise ConfigError(
            f"SFCN parameter soft_bins={width:g} is too wide for the training targets, "
            f"which range over [{low:g}, {high:g}] ({(high - low) / width:.2g} bins); soft "
            "labels need the targets to span at least 2 bins. Use soft_bins <= "
            f"{(high - low) / 2:g} (e.g. 1 for ages in years), or drop soft_bins."
        )
    first, last = math.floor(low / width) - pad, math.ceil(high / width) + pad
    return first * width, last * width


def _edges(start: float, stop: float, width: float) -> np.ndarray:
    """Bin edges of ``[start, stop)``; checks that it holds a whole number (>= 2) of bins."""
    count = (stop - start) / width
    n = round(count)
    if not (math.isfinite(count) and n >= 2 and abs(count - n) <= 1e-6 * max(n, 1)):
        raise ConfigError(
            f"SFCN parameter bin_range=[{start:g}, {stop:g}] must hold a whole number (at "
            f"least 2) of soft_bins={width:g} bins, found {count:.6g}; derive it from the "
            "training targets with SFCN.fit_config (brainmaps train does this per fold)."
        )
    return start + width * np.arange(n + 1, dtype=np.float64)


def soft_labels(targets: torch.Tensor, edges: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian soft labels: the mass of ``N(target, sigma^2)`` in each bin, summing to 1.

    As ``num2vect`` of Peng et al. (the difference of the normal CDF at a bin's two
    edges), renormalised over the bins so that the label is a distribution. Targets
    beyond the bins count as the nearest edge (their label piles up in the edge bin).

    Parameters
    ----------
    targets : torch.Tensor, shape (N,)
        In the units of ``edges``.
    edges : torch.Tensor, shape (K + 1,)
        Increasing bin edges.
    sigma : float
        Standard deviation, in the units of ``edges``.

    Returns
    -------
    torch.Tensor, shape (N, K)
        Float32 (computed in float64).
    """
    edges = edges.to(torch.float64)
    y = targets.to(torch.float64).reshape(-1, 1).clamp(float(edges[0]), float(edges[-1]))
    cdf = torch.special.ndtr((edges.reshape(1, -1) - y) / sigma)
    mass = (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0)
    return (mass / mass.sum(dim=1, keepdim=True)).to(torch.float32)


def kl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(labels || softmax(logits))`` (in float32).

    Peng et al.'s ``KLDivLoss(reduction="sum")`` of ``log_softmax`` outputs divided by the
    batch size; zero labels contribute nothing.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    return functional.kl_div(log_p, labels.float(), reduction="batchmean")


class SoftBinExpectation(nn.Module):
    """Output layer of a soft-bin regressor: the softmax-weighted mean of the bin centres.

    Maps ``(N, K)`` bin logits to ``(N, 1)`` expected values in standardised target
    units, ``(sum_k softmax(z)_k c_k - mean) / std``, and holds the training objective
    (:meth:`loss`). The bins are fixed by the configuration (non-persistent buffers, not
    weights).

    Parameters
    ----------
    bin_range : (float, float)
        ``(start, stop)`` of the bins, in target units.
    width : float
        Bin width in target units.
    sigma : float
        Standard deviation of the Gaussian soft labels, in target units.
    target_stats : (float, float)
        ``(mean, std)`` with which the training targets are standardised.

    Raises
    ------
    ConfigError
        If the range is not a whole number (>= 2) of bins.

    References
    ----------
    .. [1] H. Peng, W. Gong, C. F. Beckmann, A. Vedaldi, S. M. Smith, "Accurate brain age
       prediction with lightweight deep neural networks", Medical Image Analysis
       68:101871, 2021.
    """

    def __init__(
        self,
        bin_range: Sequence[float],
        width: float,
        sigma: float,
        target_stats: Sequence[float],
    ) -> None:
        super().__init__()
        mean, std = (float(v) for v in target_stats)
        edges = (_edges(float(bin_range[0]), float(bin_range[1]), width) - mean) / std
        self.n_bins = len(edges) - 1
        self.sigma = sigma / std  # standardised units, as the targets arrive
        self.register_buffer("edges", torch.tensor(edges, dtype=torch.float32), persistent=False)
        centres = (edges[:-1] + edges[1:]) / 2
        self.register_buffer(
            "centres", torch.tensor(centres, dtype=torch.float32), persistent=False
        )

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` logits to ``(N, 1)`` expected standardised values (float32)."""
        return (logits.float().softmax(dim=1) @ self.centres).unsqueeze(1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """KL loss of the logits against the soft labels of standardised ``targets``."""
        return kl_loss(logits, soft_labels(targets, self.edges, self.sigma))

    def extra_repr(self) -> str:
        """The number of bins."""
        return f"n_bins={self.n_bins}"
