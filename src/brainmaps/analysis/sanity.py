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
from brainmaps.utils import truthy

__all__ = [
    "DATA_CHECK",
    "LABELS_PERMUTED",
    "MODEL_CHECK",
    "SPEARMAN_BOUND",
    "SUMMARY_COLUMNS",
    "compare_maps",
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


def compare_maps(original: np.ndarray, maps: np.ndarray, mask: np.ndarray | None) -> list[dict]:
    """:func:`map_similarity` of each pair ``original[i]``, ``maps[i]``, and whether
    ``original[i]`` is constant.

    Returns
    -------
    list of dict
        One per map: ``sample`` (its index), the three scores and ``trained_constant``
        (``|original[i]|`` is constant inside ``mask``: it ranks no voxel, so its
        correlations are ``NaN`` whatever the other map is).
    """
    original, maps = np.asarray(original), np.asarray(maps)
    keep = _mask(mask, original.shape[1:])
    rows = []
    for i in range(len(original)):
        flat = np.abs(np.asarray(original[i], dtype=np.float64)[keep])
        rows.append({"sample": i, **map_similarity(original[i], maps[i], mask),
                     "trained_constant": bool(np.ptp(flat) == 0)})  # fmt: skip
    return rows


#: ``check`` of the cascading model-parameter randomisation rows and of the data
#: randomisation rows (the model retrained on permuted labels) of the sanity table.
MODEL_CHECK, DATA_CHECK = "model", "data"
#: The ``layer`` of the data randomisation rows.
LABELS_PERMUTED = "labels permuted"
#: The columns of :func:`sanity_summary`, in order.
SUMMARY_COLUMNS = [
    "method", "n_subjects", "n_constant", "n_stages", "spearman_abs", "spearman", "ssim",
    "bound", "data_n_folds", "data_n_subjects", "data_spearman_abs", "data_spearman",
    "data_ssim", "data_accuracy", "data_balanced_accuracy", "data_passed", "passed",
]  # fmt: skip


def _median(values: pd.Series) -> float:
    """Median with ``NaN`` (a constant map: no ranking left) counted as 0; NaN if empty."""
    if not len(values):
        return float("nan")
    return float(np.median(np.nan_to_num(values.to_numpy(dtype=float), nan=0.0)))


def _constant(rows: pd.DataFrame) -> np.ndarray:
    """Rows whose trained map is constant (older tables without the column: none)."""
    if "trained_constant" not in rows:
        return np.zeros(len(rows), dtype=bool)
    return rows["trained_constant"].map(truthy).to_numpy(dtype=bool)


def _medians(rows: pd.DataFrame, bound: float, prefix: str = "") -> dict:
    """Medians of the rows whose trained map ranks voxels, and their pass / fail."""
    measured = rows[~_constant(rows)]
    rho = _median(np.abs(measured["spearman_abs"]))
    return {
        f"{prefix}n_subjects": len(measured),
        f"{prefix}spearman_abs": rho,
        f"{prefix}spearman": _median(measured["spearman"]),
        f"{prefix}ssim": _median(measured["ssim"]),
        # no subject left (every trained map constant): nothing shows that the maps
        # depend on the model, so the method fails rather than passes by default
        f"{prefix}passed": bool(len(measured) and rho <= bound),
    }


def sanity_summary(scores: pd.DataFrame, bound: float = SPEARMAN_BOUND) -> pd.DataFrame:
    """One pass / fail line per method from the randomisation scores.

    Rule of the cascading check (``check`` ``"model"``, the default of tables without
    a ``check`` column): a method **fails** when the median over subjects of
    ``|spearman_abs|`` after every layer is randomised stays above ``bound`` (0.5). With
    every weight random, nothing of the trained model is left to explain, so what a map
    still shares with the trained model's map comes from the input (and the
    architecture) alone. Adebayo et al. found rank correlations near 0.1-0.3 after full
    randomisation for gradients and Grad-CAM, and near 1 for maps that do not depend on
    the weights (an edge detector, guided backpropagation's input structure); 0.5 lies
    halfway between the two and above the correlation that any two maps of one brain
    share through its anatomy. The data randomisation check (``check`` ``"data"``: the
    maps of a model trained on permuted labels) has the same rule and bound; a method
    passes when it passes both (the data check only when measured).

    A randomised map that becomes constant (``NaN`` correlation) keeps no ranking and
    counts as 0. A subject whose *trained* map is constant (``trained_constant``) ranks
    nothing to compare: it is left out of the medians (``n_constant`` counts it), and a
    check with no subject left fails (``NaN`` medians, ``passed`` false): a method whose
    maps are all flat is not shown to depend on the model. This is a necessary
    condition, not a proof of faithfulness.

    Parameters
    ----------
    scores : pandas.DataFrame
        Rows of :func:`brainmaps.steps.sanity.sanity_run`'s table (``method``,
        ``fold``, ``subject``, ``stage``, ``spearman_abs``, ``spearman``, ``ssim``;
        optionally ``check``, ``trained_constant``, ``accuracy``,
        ``balanced_accuracy``).
    bound : float
        The bound on the median ``|spearman_abs|``.

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`: ``n_subjects``, ``n_constant``, ``n_stages`` and the
        medians at the last stage of the cascading check (every layer randomised);
        ``data_*`` the data check's (``data_n_folds`` models, ``data_accuracy`` and
        ``data_balanced_accuracy`` their mean test scores on the true labels, near
        chance when the labels were destroyed; empty when not measured); ``passed``
        both checks' verdict.
    """
    checks = scores["check"].fillna(MODEL_CHECK) if "check" in scores else (
        pd.Series(MODEL_CHECK, scores.index))  # fmt: skip
    rows = []
    for method, part in scores.groupby("method", sort=False):
        check = checks[part.index]
        model, data = part[check == MODEL_CHECK], part[check == DATA_CHECK]
        last = model[model["stage"] == model["stage"].max()] if len(model) else model
        row = {"method": method, "n_constant": int(_constant(last).sum()),
               "n_stages": int(model["stage"].max()) if len(model) else 0, "bound": float(bound),
               **_medians(last, bound)}  # fmt: skip
        verdicts = [row.pop("passed")] if len(model) else []
        if len(data):
            folds = data.drop_duplicates("fold")
            row |= (
                _medians(data, bound, "data_")
                | {"data_n_folds": len(folds)}
                | {
                    f"data_{c}": float(pd.to_numeric(folds[c]).mean()) if c in folds else np.nan
                    for c in ("accuracy", "balanced_accuracy")
                }
            )
            verdicts.append(row["data_passed"])
        row["passed"] = bool(verdicts) and all(verdicts)
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    table["data_passed"] = table["data_passed"].astype(object)
    return table
