"""Faithfulness of attribution maps: deletion and insertion curves (torch-free).

A map is faithful when the voxels it ranks highest are the ones the model relies on.
The *deletion* curve replaces the top-k % voxels of the ranking by an uninformative
fill (a blurred copy of the volume, zeros or the mean) for growing k and follows the
probability of the explained class: a faithful map makes it fall fast, so a **lower
deletion AUC is better**. The *insertion* curve starts from the fully filled volume and
puts the top-k % original voxels back: the probability should rise fast, so a **higher
insertion AUC is better** (Petsiuk et al. 2018, RISE). Both are the "most relevant
first" region perturbation of Samek et al. (2017) with single voxels as regions. A
random ranking of the same voxels is the control that any map must beat.

Every function works on NumPy arrays and a ``predict`` callable, so maps and models
from any tool can be scored; ``brainmaps.steps.faithfulness`` builds the callable from
a run's fold models.

References
----------
.. [1] V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized Input Sampling for Explanation
   of Black-box Models", BMVC 2018.
.. [2] W. Samek, A. Binder, G. Montavon, S. Lapuschkin, K.-R. Müller, "Evaluating the
   visualization of what a deep neural network has learned", IEEE TNNLS 28(11), 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from brainmaps.exceptions import ConfigError, ImageError, ShapeError

__all__ = [
    "FILLS",
    "MODES",
    "curve_auc",
    "deletion_curve",
    "fill_volume",
    "insertion_curve",
    "random_attribution",
    "rank_voxels",
]

#: Perturbation modes of :func:`deletion_curve`.
MODES = ("deletion", "insertion")
#: Fills of :func:`fill_volume`.
FILLS = ("blur", "zero", "mean")

Predict = Callable[[np.ndarray], np.ndarray]


def _as_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ShapeError(
            f"mask has shape {mask.shape} but the volume has shape {shape}; give a brain "
            "mask on the volume's grid."
        )
    mask = mask.astype(bool)
    if not mask.any():
        raise ConfigError("mask is empty: no voxel to rank; give a mask with brain voxels.")
    return mask


def fill_volume(
    volume: np.ndarray,
    fill: str = "blur",
    *,
    sigma: float | Sequence[float] = 2.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The uninformative volume that perturbed voxels are taken from.

    Parameters
    ----------
    volume : numpy.ndarray
        A 3D volume.
    fill : {"blur", "zero", "mean"}
        ``"blur"``: a Gaussian blur of the volume (``scipy.ndimage.gaussian_filter``,
        a true Gaussian), which removes fine structure but keeps intensities in range,
        as in RISE; ``"zero"``: zeros; ``"mean"``: the mean of the volume inside
        ``mask``.
    sigma : float or sequence of float
        Standard deviation of the blur in voxels (per axis if a sequence).
    mask : numpy.ndarray of bool, optional
        Voxels whose mean is the ``"mean"`` fill (default: all voxels).

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``volume``.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if fill == "blur":
        return gaussian_filter(volume, sigma=sigma, mode="nearest").astype(np.float32)
    if fill == "zero":
        return np.zeros_like(volume)
    if fill == "mean":
        return np.full_like(volume, volume[_as_mask(mask, volume.shape)].mean())
    raise ConfigError(f"fill must be one of {FILLS}, got {fill!r}.")


def rank_voxels(
    attribution: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    absolute: bool = False,
    random_state: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Flat indices of the voxels inside ``mask``, most relevant first.

    Parameters
    ----------
    attribution : numpy.ndarray
        The map (3D); higher means more relevant.
    mask : numpy.ndarray of bool, optional
        Only these voxels are ranked (default: all).
    absolute : bool
        Rank by ``|attribution|`` (for signed maps whose negative values also matter).
    random_state : int, numpy.random.Generator or None
        Seed of the tie break: equal values (the flat zeros of a Grad-CAM map, say) are
        ordered at random rather than by array position, which would delete one side
        of the volume first.

    Returns
    -------
    numpy.ndarray of int64
        Flat (C-order) indices into the volume.

    Raises
    ------
    ImageError
        If the map holds NaN or infinite values inside the mask.
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    inside = np.flatnonzero(_as_mask(mask, attribution.shape))
    values = attribution.ravel()[inside]
    if not np.all(np.isfinite(values)):
        raise ImageError(
            f"attribution has {int(np.sum(~np.isfinite(values)))} NaN/infinite voxel(s) "
            "inside the mask; recompute the map or replace them (np.nan_to_num)."
        )
    if absolute:
        values = np.abs(values)
    ties = np.random.default_rng(random_state).random(len(values))
    return inside[np.lexsort((ties, -values))]


def random_attribution(
    shape: Sequence[int], random_state: int | np.random.Generator | None = 0
) -> np.ndarray:
    """A map of independent uniform values: the random-ranking control.

    Parameters
    ----------
    shape : sequence of int
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    numpy.ndarray of float32
    """
    return np.random.default_rng(random_state).random(tuple(shape)).astype(np.float32)


def _fractions(fractions, steps: int | None) -> np.ndarray:
    if fractions is None:
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}.")
        return np.linspace(0.0, 1.0, int(steps) + 1)
    f = np.asarray(fractions, dtype=np.float64).ravel()
    if len(f) < 2 or np.any(np.diff(f) <= 0) or f[0] < 0 or f[-1] > 1:
        raise ConfigError(
            f"fractions must increase strictly within [0, 1] (at least two), got {f.tolist()}."
        )
    return f


def _scores(predict: Predict, batch: np.ndarray, target: int | None) -> np.ndarray:
    out = np.asarray(predict(batch), dtype=np.float64)
    if out.ndim == 2 and target is None and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim == 1 and target is None and len(out) == len(batch):
        return out
    if out.ndim != 2 or len(out) != len(batch) or target is None:
        raise ShapeError(
            f"predict returned shape {out.shape} for {len(batch)} volumes; expected "
            f"(n, n_classes) with a class index target (got target={target!r}), or (n,) "
            "for a regression output with target=None."
        )
    if not 0 <= int(target) < out.shape[1]:
        raise ConfigError(f"target must be in 0..{out.shape[1] - 1}, got {target!r}.")
    return out[:, int(target)]


def deletion_curve(
    predict: Predict,
    volume: np.ndarray,
    attribution: np.ndarray,
    target: int | None,
    *,
    mode: str = "deletion",
    fill: str | np.ndarray = "blur",
    fractions: Sequence[float] | None = None,
    steps: int = 20,
    mask: np.ndarray | None = None,
    sigma: float | Sequence[float] = 2.0,
    absolute: bool = False,
    batch_size: int = 32,
    random_state: int | np.random.Generator | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Deletion (or insertion) curve of one volume ranked by one map.

    The voxels inside ``mask`` are ranked by ``attribution`` (:func:`rank_voxels`).
    Deletion: for each fraction f, the top ``round(f * n)`` voxels are replaced by
    the fill. Insertion: the volume starts fully filled inside the mask and the top
    ``round(f * n)`` original voxels are put back. Voxels outside the mask are never
    changed, so fraction 0 of deletion is the original volume, fraction 1 of deletion
    equals fraction 0 of insertion (the filled volume), and fraction 1 of insertion is
    the original again. The perturbed volumes go to ``predict`` in batches.

    Parameters
    ----------
    predict : callable
        ``predict(batch)`` with ``batch`` a float32 array ``(B, X, Y, Z)`` returns
        ``(B, n_classes)`` probabilities (or ``(B,)`` outputs of a regression model).
    volume : numpy.ndarray
        The input volume ``(X, Y, Z)``.
    attribution : numpy.ndarray
        Its map, same shape; higher is more relevant.
    target : int or None
        The class whose probability is followed (``None`` for a regression output).
    mode : {"deletion", "insertion"}
    fill : {"blur", "zero", "mean"} or numpy.ndarray
        See :func:`fill_volume`; an array is used as the fill volume itself.
    fractions : sequence of float, optional
        Fractions of the masked voxels, increasing in [0, 1]; default
        ``np.linspace(0, 1, steps + 1)``.
    steps : int
        Number of steps when ``fractions`` is not given (20: every 5 %).
    mask : numpy.ndarray of bool, optional
        The voxels that are ranked and perturbed (a brain mask; default all).
    sigma : float or sequence of float
        Blur in voxels for ``fill="blur"``.
    absolute : bool
        Rank by ``|attribution|``.
    batch_size : int
        Volumes per call of ``predict``.
    random_state : int, numpy.random.Generator or None
        Tie break of the ranking.

    Returns
    -------
    fractions : numpy.ndarray
    probs : numpy.ndarray
        The followed probability (or output) at each fraction.

    Examples
    --------
    >>> f, p = deletion_curve(predict, x, saliency, target=1, mask=brain)  # doctest: +SKIP
    >>> curve_auc(f, p)  # lower is more faithful  # doctest: +SKIP
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or np.shape(attribution) != volume.shape:
        raise ShapeError(
            f"volume and attribution must be 3D arrays of one shape, got {volume.shape} and "
            f"{np.shape(attribution)}; pass one subject's volume and its map."
        )
    mask = _as_mask(mask, volume.shape)
    f = _fractions(fractions, steps)
    filled = _fill_array(volume, fill, sigma, mask)
    order = rank_voxels(attribution, mask, absolute=absolute, random_state=random_state)
    counts = np.rint(f * len(order)).astype(np.int64)
    start, source = (
        (volume, filled) if mode == "deletion" else (_masked_fill(volume, filled, mask), volume)
    )
    flat_source = source.ravel()
    probs = []
    for lo in range(0, len(counts), batch_size):
        batch = np.empty((len(counts[lo : lo + batch_size]), *volume.shape), dtype=np.float32)
        for j, k in enumerate(counts[lo : lo + batch_size]):
            flat = batch[j].reshape(-1)
            flat[:] = start.ravel()
            flat[order[:k]] = flat_source[order[:k]]
        probs.append(_scores(predict, batch, target))
    return f, np.concatenate(probs)


def _fill_array(volume, fill, sigma, mask) -> np.ndarray:
    if isinstance(fill, str):
        return fill_volume(volume, fill, sigma=sigma, mask=mask)
    filled = np.asarray(fill, dtype=np.float32)
    if filled.shape != volume.shape:
        raise ShapeError(f"fill array has shape {filled.shape}, the volume {volume.shape}.")
    return filled


def _masked_fill(volume: np.ndarray, filled: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, filled, volume).astype(np.float32)


def insertion_curve(
    predict: Predict, volume: np.ndarray, attribution: np.ndarray, target: int | None, **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Insertion curve: :func:`deletion_curve` with ``mode="insertion"``.

    Parameters
    ----------
    predict, volume, attribution, target
        As in :func:`deletion_curve`.
    **kwargs
        Any other option of :func:`deletion_curve` except ``mode``.

    Returns
    -------
    fractions, probs : numpy.ndarray
    """
    return deletion_curve(predict, volume, attribution, target, mode="insertion", **kwargs)


def curve_auc(fractions: Sequence[float], values: Sequence[float]) -> float:
    """Area under a deletion or insertion curve (trapezoid rule over the fraction).

    Parameters
    ----------
    fractions : sequence of float
        Increasing, within [0, 1]; the area spans ``fractions[0]`` to
        ``fractions[-1]`` (give 0 and 1 for the usual area).
    values : sequence of float
        The probability at each fraction.

    Returns
    -------
    float
        For probabilities and fractions from 0 to 1, a value in [0, 1].
    """
    f = _fractions(fractions, None)
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.shape != f.shape:
        raise ShapeError(f"fractions and values differ in length: {len(f)} and {len(v)}.")
    return float(np.trapezoid(v, f))
