"""Remove and retrain (ROAR), keep and retrain (KAR): the masks and the tables (torch-free).

Deleting voxels from a trained model's inputs (:mod:`brainmaps.analysis.faithfulness`)
mixes two effects: the model loses the information and it sees inputs unlike anything it
was trained on. Hooker et al. (2019) separate them by retraining: a fraction of each
image's inputs ranked highest by a map is replaced by an uninformative value, in the
training images and in the test images, a new model is trained from scratch on the
modified training images and scored on the modified test images. If the map ranks the
informative inputs first, the retrained model's accuracy falls faster than when the same
number of inputs is replaced at random (**ROAR**: remove the top of the ranking). **KAR**
(keep and retrain) replaces the bottom of the ranking instead: a good ranking keeps the
accuracy higher than random replacement does.

Conventions here:

- ``fraction`` is always the share of the brain voxels that are *replaced*, for both
  modes (the x axis of Hooker et al.'s figures): ROAR replaces the ``round(f n)``
  highest-ranked brain voxels, KAR the ``round(f n)`` lowest-ranked (it keeps the top
  ``n - round(f n)``). Fraction 0 is the unmodified retrain, the reference of both.
- Only voxels inside the brain mask are ranked and replaced; ties are broken at random
  (seeded) by :func:`~brainmaps.analysis.faithfulness.rank_voxels`, so a map with a flat
  background does not remove one side of the volume first.
- Replacing a uniformly random set of ``round(f n)`` voxels is the control of both modes
  (the bottom of a random ranking is as random as its top), so it is trained once per
  fraction and fold (``mode`` ``"both"`` in the per-fold table).
- The summary is paired: a method's model of fold ``k`` and seed ``s`` is compared with
  the random ranking's and the unmodified retrain's models of the same ``k`` and ``s``
  only, so a method retrained on some folds is never set against a reference averaged
  over others (:func:`roar_summary`).

This module holds the masking and the tables; retraining is in
:mod:`brainmaps.steps.roar`.

References
----------
.. [1] S. Hooker, D. Erhan, P.-J. Kindermans, B. Kim, "A Benchmark for Interpretability
   Methods in Deep Neural Networks", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from brainmaps.analysis.faithfulness import FILLS as VOLUME_FILLS
from brainmaps.analysis.faithfulness import fill_volume, rank_voxels
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.validation import check_choice, check_fraction

__all__ = [
    "FILLS",
    "MODES",
    "RANDOM",
    "REFERENCE",
    "SUMMARY_COLUMNS",
    "UNIT_COLUMNS",
    "fill_like",
    "modified_volumes",
    "replace_voxels",
    "replaced_voxels",
    "roar_summary",
    "training_mean",
]

#: ``"roar"`` replaces the top of the ranking, ``"kar"`` the bottom.
MODES = ("roar", "kar")
#: What replaced voxels become: the per-voxel mean of the fold's training volumes
#: (default), or one of :data:`brainmaps.analysis.faithfulness.FILLS` of each volume.
FILLS = ("train_mean", *VOLUME_FILLS)
#: ``method`` of the unmodified retrain (fraction 0) in the per-fold table.
REFERENCE = "none"
#: ``method`` of the random ranking in the per-fold table.
RANDOM = "random"
#: One row per retrained model (``analysis/roar_folds.tsv``).
UNIT_COLUMNS = [
    "method", "mode", "fraction", "fold", "seed", "n_train", "n_val", "n_test", "epochs",
    "best_epoch", "accuracy", "balanced_accuracy", "roc_auc", "seconds", "options", "maps",
]  # fmt: skip
#: One row per method and fraction (``analysis/roar.tsv``, ``analysis/kar.tsv``).
SUMMARY_COLUMNS = [
    "method", "mode", "fraction", "accuracy", "accuracy_random", "roc_auc", "roc_auc_random",
    "accuracy_reference", "drop", "drop_random", "accuracy_std", "n_folds", "folds", "seeds",
    "epochs",
]  # fmt: skip


def replaced_voxels(
    attribution: np.ndarray,
    mask: np.ndarray | None,
    fraction: float,
    mode: str = "roar",
    *,
    absolute: bool = False,
    random_state=0,
) -> np.ndarray:
    """The voxels ROAR or KAR replaces in one volume: a boolean volume.

    Parameters
    ----------
    attribution : numpy.ndarray
        The volume's map (3D); higher is more relevant.
    mask : numpy.ndarray of bool, optional
        Brain voxels: only these are ranked and replaced (default: all voxels).
    fraction : float
        Share of the mask's ``n`` voxels replaced, in [0, 1]: ``round(fraction * n)``.
    mode : {"roar", "kar"}
        ``"roar"``: the highest-ranked voxels are replaced; ``"kar"``: the lowest-ranked
        ones (the top ``n - round(fraction * n)`` are kept).
    absolute : bool
        Rank by ``|attribution|``.
    random_state : int, sequence of int or numpy.random.Generator
        Seed of the tie break (:func:`~brainmaps.analysis.faithfulness.rank_voxels`).

    Returns
    -------
    numpy.ndarray of bool
        Shape of ``attribution``; ``True`` where the voxel is replaced.
    """
    check_choice("mode", mode, MODES)
    fraction = check_fraction("fraction", fraction, closed=True)
    order = rank_voxels(attribution, mask, absolute=absolute, random_state=random_state)
    k = int(np.rint(fraction * len(order)))
    chosen = order[:k] if mode == "roar" else order[len(order) - k :]
    replaced = np.zeros(np.size(attribution), dtype=bool)
    replaced[chosen] = True
    return replaced.reshape(np.shape(attribution))


def smooth_random(noise: np.ndarray, sigma: float | Sequence[float]) -> np.ndarray:
    """A spatially smooth random ranking: ``noise`` blurred by a Gaussian (sigma in voxels).

    Ranking it removes compact blobs of about the blur's size, the control for smooth maps
    (Hooker et al.'s random ranking removes scattered voxels). Returned as float64 so the
    ranking is not decided by float32 ties.
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(noise, dtype=np.float64), sigma, mode="nearest")


def replace_voxels(volume: np.ndarray, replaced: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``volume`` with the ``replaced`` voxels taken from ``fill`` (float32, a new array).

    Parameters
    ----------
    volume : numpy.ndarray
        ``(X, Y, Z)`` or ``(C, X, Y, Z)``; a multi-channel volume is replaced in every
        channel at the same voxels.
    replaced : numpy.ndarray of bool
        ``(X, Y, Z)`` (:func:`replaced_voxels`).
    fill : numpy.ndarray
        The values replaced voxels take: the shape of ``volume``.

    Returns
    -------
    numpy.ndarray of float32
    """
    volume = np.asarray(volume, dtype=np.float32)
    if np.shape(replaced) != volume.shape[-3:] or np.shape(fill) != volume.shape:
        raise ShapeError(
            f"volume {volume.shape}, replaced voxels {np.shape(replaced)} and fill "
            f"{np.shape(fill)} do not match; give the fill the volume's shape and the "
            "replaced voxels its spatial shape."
        )
    return np.where(replaced, fill, volume).astype(np.float32)


def training_mean(volumes, rows: Sequence[int]) -> np.ndarray:
    """Per-voxel mean of ``volumes[rows]`` (the ``"train_mean"`` fill of a fold), float32.

    The same value for every subject at a voxel: replacing a voxel by it removes all that
    the voxel told about the subject, and it is computed from training volumes only.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ConfigError("training_mean needs at least one training volume.")
    total = np.zeros(np.shape(volumes[int(rows[0])]), dtype=np.float64)
    for i in rows:
        total += np.asarray(volumes[int(i)], dtype=np.float64)
    return (total / len(rows)).astype(np.float32)


def fill_like(
    volume: np.ndarray,
    fill: str,
    *,
    mean: np.ndarray | None = None,
    sigma=2.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The fill volume of one (possibly multi-channel) volume.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(X, Y, Z)`` or ``(C, X, Y, Z)``.
    fill : {"train_mean", "blur", "zero", "mean"}
        ``"train_mean"`` returns ``mean``; the others are
        :func:`~brainmaps.analysis.faithfulness.fill_volume` of each channel.
    mean : numpy.ndarray, optional
        :func:`training_mean` of the fold (needed for ``"train_mean"``).
    sigma, mask
        Passed to :func:`~brainmaps.analysis.faithfulness.fill_volume`.

    Returns
    -------
    numpy.ndarray of float32
    """
    check_choice("fill", fill, FILLS)
    volume = np.asarray(volume, dtype=np.float32)
    if fill == "train_mean":
        if mean is None or np.shape(mean) != volume.shape:
            raise ShapeError(
                f"the train_mean fill needs the fold's per-voxel training mean of shape "
                f"{volume.shape}, got {None if mean is None else np.shape(mean)}."
            )
        return np.asarray(mean, dtype=np.float32)
    if volume.ndim == 3:
        return fill_volume(volume, fill, sigma=sigma, mask=mask)
    return np.stack([fill_volume(c, fill, sigma=sigma, mask=mask) for c in volume])


def modified_volumes(
    volumes,
    attribution: Callable[[int], np.ndarray],
    mask: np.ndarray | None,
    fraction: float,
    mode: str = "roar",
    *,
    fill: str = "train_mean",
    mean: np.ndarray | None = None,
    sigma=2.0,
    absolute: bool = False,
    random_state=0,
) -> list[np.ndarray]:
    """Every volume of ``volumes`` with its ROAR / KAR voxels replaced (a new list).

    Parameters
    ----------
    volumes : sequence of numpy.ndarray
        ``(X, Y, Z)`` or ``(C, X, Y, Z)`` volumes.
    attribution : callable
        ``attribution(i)`` is the map that ranks volume ``i``.
    mask, fraction, mode, absolute
        See :func:`replaced_voxels`.
    fill, mean, sigma
        See :func:`fill_like`.
    random_state : int or sequence of int
        Volume ``i``'s ties are broken with seed ``[*random_state, i]``.

    Returns
    -------
    list of numpy.ndarray
        float32 volumes, one per volume of ``volumes``, in order.
    """
    seed = [int(v) for v in np.atleast_1d(random_state)]
    out = []
    for i in range(len(volumes)):
        x = np.asarray(volumes[i], dtype=np.float32)
        replaced = replaced_voxels(
            attribution(i), mask, fraction, mode, absolute=absolute, random_state=[*seed, i]
        )
        out.append(replace_voxels(x, replaced, fill_like(x, fill, mean=mean, sigma=sigma,
                                                         mask=mask)))  # fmt: skip
    return out


_MODEL_KEY = ["method", "mode", "fraction", "fold", "seed"]


def _paired(units: pd.DataFrame, method: str, mode: str) -> pd.DataFrame:
    """The method's rows of ``mode`` beside the random and reference models of their folds.

    Inner joins: a model enters only when the random ranking's model of the same fraction,
    fold and seed and the unmodified retrain of the same fold and seed are finished, so the
    method, its control and its reference are means over the same models.
    """
    key = ["fraction", "fold", "seed"]
    mine = units[(units["method"] == method) & (units["mode"] == mode)]
    rnd = units[units["method"] == RANDOM][[*key, "accuracy", "roc_auc"]]
    ref = units[units["method"] == REFERENCE][["fold", "seed", "accuracy", "roc_auc"]]
    ref = ref.rename(columns={"accuracy": "accuracy_reference", "roc_auc": "roc_auc_reference"})
    paired = mine.merge(rnd, on=key, how="inner", suffixes=("", "_random"))
    return paired.merge(ref, on=["fold", "seed"], how="inner")


def _reference_rows(units: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """The unmodified retrains of the ``(fold, seed)`` pairs of ``models`` (fraction 0)."""
    pairs = models[["fold", "seed"]].drop_duplicates()
    ref = units[units["method"] == REFERENCE].merge(pairs, on=["fold", "seed"], how="inner")
    return ref.assign(
        accuracy_random=ref["accuracy"], roc_auc_random=ref["roc_auc"],
        accuracy_reference=ref["accuracy"], roc_auc_reference=ref["roc_auc"],
    )  # fmt: skip


def _row(method: str, mode: str, fraction: float, part: pd.DataFrame) -> dict:
    acc = part["accuracy"].to_numpy(dtype=float)
    rnd = part["accuracy_random"].to_numpy(dtype=float)
    ref = part["accuracy_reference"].to_numpy(dtype=float)
    return {
        "method": method,
        "mode": mode,
        "fraction": fraction,
        "accuracy": float(np.mean(acc)),
        "accuracy_random": float(np.mean(rnd)),
        "roc_auc": float(part["roc_auc"].astype(float).mean()),
        "roc_auc_random": float(part["roc_auc_random"].astype(float).mean()),
        "accuracy_reference": float(np.mean(ref)),
        "drop": float(np.mean(ref - acc)),
        "drop_random": float(np.mean(ref - rnd)),
        "accuracy_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else np.nan,
        "n_folds": int(part["fold"].nunique()),
        "folds": ",".join(str(int(k)) for k in sorted(part["fold"].unique())),
        "seeds": ",".join(str(int(s)) for s in sorted(part["seed"].unique())),
        "epochs": int(part["epochs"].iloc[0]),
    }


def roar_summary(units: pd.DataFrame, mode: str = "roar") -> pd.DataFrame:
    """Accuracy per method and fraction against the random ranking, from the per-fold rows.

    Parameters
    ----------
    units : pandas.DataFrame
        :data:`UNIT_COLUMNS` rows of one experiment (one set of options and maps; the
        step passes only those, :func:`brainmaps.steps.roar.roar_run`): each method's
        retrains (``mode`` ``"roar"`` or ``"kar"``), the random ranking's (``method``
        :data:`RANDOM`) and the unmodified retrain's (``method`` :data:`REFERENCE`,
        fraction 0). Of two rows with the same method, mode, fraction, fold and seed the
        later one is used.
    mode : {"roar", "kar"}

    Returns
    -------
    pandas.DataFrame
        :data:`SUMMARY_COLUMNS`, one row per method and fraction, fraction 0 first. Every
        value is paired by ``(fold, seed)``: a method's model at fraction ``f`` is used only
        with the random ranking's model of the same fraction, fold and seed and the
        unmodified retrain of the same fold and seed, and ``accuracy``,
        ``accuracy_random`` and ``accuracy_reference`` are means over those same models
        (``drop = accuracy_reference - accuracy``, ``drop_random = accuracy_reference -
        accuracy_random``). A model whose random or reference model is not finished is
        left out until it is. The fraction-0 row is the unmodified retrain of the folds and
        seeds the method's rows cover (its accuracy is also ``accuracy_random``).
        ``accuracy_std`` is over the method's models (ddof 1); ``n_folds``, ``folds`` and
        ``seeds`` say which models were averaged.
    """
    check_choice("mode", mode, MODES)
    if units.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    units = units.astype({"method": str, "mode": str, "fraction": float, "fold": int,
                          "seed": int})  # fmt: skip
    units = units.assign(fraction=units["fraction"].round(6))
    units = units.drop_duplicates(subset=_MODEL_KEY, keep="last")
    methods = [
        m
        for m in dict.fromkeys(units["method"])
        if m not in (REFERENCE, RANDOM) and (units[units["method"] == m]["mode"] == mode).any()
    ]
    rows = []
    for method in methods:
        paired = _paired(units, method, mode)
        if paired.empty:
            continue
        rows.append(_row(method, mode, 0.0, _reference_rows(units, paired)))
        for fraction, part in paired.groupby("fraction", sort=True):
            rows.append(_row(method, mode, float(fraction), part))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
