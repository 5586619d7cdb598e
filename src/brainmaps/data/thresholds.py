"""Histogram thresholds shared by preprocessing (brain masks) and morphometry (tissue)."""

from __future__ import annotations

import numpy as np

from brainmaps.exceptions import ShapeError

__all__ = ["otsu_threshold"]


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of a histogram.

    Otsu (1979), *A threshold selection method from gray-level histograms*. The values
    are binned into ``bins`` equal bins between their minimum and maximum; the threshold
    is the upper edge of the last bin of the lower class, so ``values > threshold`` is
    the upper class.

    Parameters
    ----------
    values : array-like
        Any shape; flattened.
    bins : int
        Histogram bins.

    Returns
    -------
    float
        The minimum when every value is equal.

    Raises
    ------
    ShapeError
        If ``values`` is empty.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ShapeError("otsu_threshold got no values.")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    mu0 = m0 / np.maximum(w0, 1.0)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1.0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[1 + int(np.argmax(between[:-1]))])
