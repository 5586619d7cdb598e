"""Scores of the model-parameter randomisation test (Adebayo et al. 2018), torch-free.

A map that explains a trained network should change when the network's weights are
replaced by random ones. :func:`map_similarity` scores how much of an original map
survives in a map of a randomised model: Spearman rank correlation of the absolute
values and of the signed values, and the structural similarity (SSIM) of the maps
scaled for display, all inside a brain mask. :func:`sanity_summary` turns the scores of
many subjects into one pass / fail line per method. The models are randomised in
:mod:`brainmaps.steps.sanity`.

References
----------
.. [1] J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim, "Sanity
   Checks for Saliency Maps", NeurIPS 2018, arXiv:1810.03292.
.. [2] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image Quality Assessment:
   From Error Visibility to Structural Similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "SPEARMAN_BOUND",
    "display_scale",
    "map_similarity",
    "rank_correlation",
    "sanity_summary",
    "ssim",
]

#: The bound of the pass / fail rule of :func:`sanity_summary` (see there).
SPEARMAN_BOUND = 0.5


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask) > 0
    if mask.shape != shape:
        raise ShapeError(f"mask has shape {mask.shape}, the maps have shape {shape}.")
    if not mask.any():
        raise ConfigError("mask is empty: no voxel to compare the maps in.")
    return mask


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ShapeError(f"the two maps differ in shape: {a.shape} and {b.shape}.")
    return a, b


def rank_correlation(
    a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *, absolute: bool = False
) -> float:
    """Spearman's rho between two maps' voxels inside ``mask``.

    Parameters
    ----------
    a, b : numpy.ndarray
        Maps of one shape.
    mask : numpy.ndarray, optional
        Voxels to compare (non-zero); default every voxel.
    absolute : bool
        Rank the absolute values (the importance regardless of sign).

    Returns
    -------
    float
        In [-1, 1]; ``NaN`` when either map is constant in the mask (it ranks nothing).
    """
    from scipy import stats  # scipy.stats is slow to import; load it on use

    a, b = _pair(a, b)
    keep = _mask(mask, a.shape)
    a, b = a[keep], b[keep]
    if absolute:
        a, b = np.abs(a), np.abs(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def display_scale(data: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``|data|`` divided by its 99th percentile in ``mask`` and clipped to [0, 1].

    How a map is shown (its brightest voxels saturate), and what SSIM compares, as in
    Adebayo et al.; voxels outside the mask become 0. An all-zero map stays zero.
    """
    data = np.abs(np.asarray(data, dtype=np.float64))
    keep = _mask(mask, data.shape)
    top = float(np.percentile(data[keep], 99))
    if not top > 0:
        top = float(data[keep].max())
    scaled = np.clip(data / top, 0.0, 1.0) if top > 0 else np.zeros_like(data)
    return np.where(keep, scaled, 0.0)


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of two volumes (Wang et al. 2004), in any dimension.

    Local means, variances and covariance under a Gaussian window (``sigma`` voxels,
    truncated at 3.5 sigma, reflected at the borders, population statistics): the
    settings of Wang et al., and of ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, written here with
    :func:`scipy.ndimage.gaussian_filter` because scikit-image is not a dependency.

    Parameters
    ----------
    a, b : numpy.ndarray
        Volumes of one shape.
    mask : numpy.ndarray, optional
        Average the SSIM map over these voxels. Default: every voxel at least one
        window radius from the border, as scikit-image does.
    data_range : float
        The range of the values (1 for maps scaled with :func:`display_scale`).
    sigma : float
        Standard deviation of the window in voxels.
    k1, k2 : float
        The constants of Wang et al.

    Returns
    -------
    float
        1 for identical volumes.
    """
    a, b = _pair(a, b)
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape) < 2 * radius + 1:
        raise ShapeError(f"SSIM needs at least {2 * radius + 1} voxels per axis, got {a.shape}.")

    def blur(v):
        return ndimage.gaussian_filter(v, sigma, mode="reflect", truncate=3.5)

    ua, ub = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ua * ua, blur(b * b) - ub * ub, blur(a * b) - ua * ub
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua**2 + ub**2 + c1) * (va + vb + c2))
    if mask is None:
        inner = tuple(slice(radius, n - radius) for n in a.shape)
        return float(s[inner].mean())
    return float(s[_mask(mask, a.shape)].mean())


def map_similarity(original: np.ndarray, other: np.ndarray, mask: np.ndarray | None) -> dict:
    """The three scores of Adebayo et al. between an original and a randomised map.

    Returns
    -------
    dict
        ``spearman_abs`` (rank correlation of the absolute values), ``spearman`` (of the
        signed values) and ``ssim`` (of the maps scaled by :func:`display_scale`), each
        inside ``mask``.
    """
    return {
        "spearman_abs": rank_correlation(original, other, mask, absolute=True),
        "spearman": rank_correlation(original, other, mask),
        "ssim": ssim(display_scale(original, mask), display_scale(other, mask), mask),
    }


def _median(values: pd.Series) -> float:
    """Median with ``NaN`` (a constant map: no ranking left) counted as 0."""
    return float(np.median(np.nan_to_num(values.to_numpy(dtype=float), nan=0.0)))


def sanity_summary(scores: pd.DataFrame, bound: float = SPEARMAN_BOUND) -> pd.DataFrame:
    """One pass / fail line per method from the cascading-randomisation scores.

    Rule: a method **fails** when the median over subjects of ``|spearman_abs|`` after
    every layer is randomised stays above ``bound`` (0.5). With every weight random,
    nothing of the trained model is left to explain, so what a map still shares with the
    trained model's map comes from the input (and the architecture) alone. Adebayo et al.
    found rank correlations near 0.1-0.3 after full randomisation for gradients and
    Grad-CAM, and near 1 for maps that do not depend on the weights (an edge detector,
    guided backpropagation's input structure); 0.5 lies halfway between the two and above
    the correlation that any two maps of one brain share through its anatomy. A map that
    becomes constant (``NaN`` correlation) keeps no ranking and counts as 0. This is a
    necessary condition, not a proof of faithfulness.

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows of :func:`brainmaps.steps.sanity.sanity_run`'s table (``method``,
        ``fold``, ``subject``, ``stage``, ``spearman_abs``, ``spearman``, ``ssim``).
    bound : float
        The bound on the median ``|spearman_abs|``.

    Returns
    -------
    pandas.DataFrame
        ``method, n_subjects, n_stages, spearman_abs, spearman, ssim, bound, passed``:
        medians over subjects at the last stage (every layer randomised).
    """
    rows = []
    for method, part in scores.groupby("method", sort=False):
        last = part[part["stage"] == part["stage"].max()]
        rows.append(
            {
                "method": method,
                "n_subjects": len(last),
                "n_stages": int(part["stage"].max()),
                "spearman_abs": _median(np.abs(last["spearman_abs"])),
                "spearman": _median(last["spearman"]),
                "ssim": _median(last["ssim"]),
                "bound": float(bound),
            }
        )
        rows[-1]["passed"] = bool(rows[-1]["spearman_abs"] <= bound)
    columns = ["method", "n_subjects", "n_stages", "spearman_abs", "spearman", "ssim", "bound",
               "passed"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
