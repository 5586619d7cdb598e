"""Figures of the report, drawn with matplotlib (Agg) and nilearn and returned as PNG bytes.

Every function takes plain tables or NIfTI images and returns the bytes of a small PNG
(``dpi`` ~ 80-100), so the report can embed dozens of them and stay a few MB. No figure
touches pyplot's global state: each one is a :class:`matplotlib.figure.Figure` rendered
by the Agg canvas, so building a report never opens a window.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from brainmaps.exceptions import ShapeError

__all__ = [
    "DPI",
    "MapScale",
    "figure_to_png",
    "map_scale",
    "plot_class_maps",
    "plot_dice_matrices",
    "plot_faithfulness",
    "plot_localisation_roc",
    "plot_regression",
    "plot_roar",
    "plot_roc",
    "plot_sanity",
]

#: Resolution of every figure (small PNGs keep a report with many maps under ~10 MB).
DPI = 80


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure with the Agg canvas and return its PNG bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : int

    Returns
    -------
    bytes
        A PNG file (starts with ``b"\\x89PNG"``).
    """
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


@lru_cache(maxsize=1)
def _template() -> nib.Nifti1Image:
    """The MNI152 template at 2 mm, bundled with nilearn (no download)."""
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


@dataclass(frozen=True)
class MapScale:
    """How the maps of one method are drawn: one colour scale for all of them.

    Attributes
    ----------
    vmax : float
        The 99th percentile of ``|value|`` inside the brain (colours saturate above).
    threshold : float
        Values with ``|value|`` below it are not drawn (the anatomy shows through).
    signed : bool
        True when the maps hold meaningful negative values (symmetric colour map).
    cut_coords : tuple of float
        World coordinates (mm) of the ortho cuts: the peak of the last map given.
    """

    vmax: float
    threshold: float
    signed: bool
    cut_coords: tuple[float, float, float]


def map_scale(
    imgs: Mapping[str, nib.Nifti1Image],
    mask_img: nib.Nifti1Image,
    percentile: float = 99.0,
    shown: float = 25.0,
) -> MapScale:
    """A robust colour scale shared by several maps on one grid.

    Parameters
    ----------
    imgs : mapping of str to nibabel.Nifti1Image
        Maps on the grid of ``mask_img``; the peak of the last one sets the cuts (pass
        the conjoined map last).
    mask_img : nibabel.Nifti1Image
        Brain mask on the same grid.
    percentile : float
        Percentile of ``|value|`` in the brain that saturates the colours.
    shown : float
        Percentage of in-brain voxels (largest ``|value|``) drawn above the threshold.

    Returns
    -------
    MapScale
    """
    mask = np.asarray(mask_img.dataobj) > 0
    values = []
    for name, img in imgs.items():
        data = np.asarray(img.dataobj, dtype=float)
        if data.shape != mask.shape:
            raise ShapeError(
                f"map {name!r} has shape {data.shape} but the brain mask has {mask.shape}; "
                "maps must be on the run grid."
            )
        values.append(np.nan_to_num(data[mask]))
    if not values or not mask.any():
        return MapScale(1.0, 0.0, False, (0.0, 0.0, 0.0))
    both = np.concatenate(values)
    vmax = float(np.percentile(np.abs(both), percentile)) or float(np.abs(both).max()) or 1.0
    threshold = float(np.percentile(np.abs(both), 100.0 - shown))
    signed = bool(both.min() < -0.05 * vmax)
    last = np.abs(np.nan_to_num(np.asarray(list(imgs.values())[-1].dataobj, dtype=float)))
    peak = np.unravel_index(np.argmax(np.where(mask, last, -1.0)), mask.shape)
    world = nib.affines.apply_affine(mask_img.affine, np.asarray(peak, dtype=float))
    return MapScale(vmax, min(threshold, 0.99 * vmax), signed, tuple(float(v) for v in world))


def _masked(img: nib.Nifti1Image, mask_img: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    data = data * (np.asarray(mask_img.dataobj) > 0)
    return nib.Nifti1Image(data, img.affine)


def _scales(maps: Mapping[str, nib.Nifti1Image], mask_img: nib.Nifti1Image) -> list[MapScale]:
    """One scale for the class maps, another for ``conjoined`` (a sum, so larger)."""
    names = list(maps)
    groups = [[n for n in names if n != "conjoined"], [n for n in names if n == "conjoined"]]
    cuts = map_scale({names[-1]: maps[names[-1]]}, mask_img).cut_coords
    by_name = {}
    for group in filter(None, groups):
        scale = map_scale({n: maps[n] for n in group}, mask_img)
        for n in group:
            by_name[n] = MapScale(scale.vmax, scale.threshold, scale.signed, cuts)
    return [by_name[n] for n in names]


def plot_class_maps(
    maps: Mapping[str, nib.Nifti1Image],
    mask_img: nib.Nifti1Image,
    dpi: int = DPI,
) -> bytes:
    """Class-mean maps side by side: ortho slices over MNI152 (top) and glass brains.

    The class maps share one colour scale (:func:`map_scale`); a map named
    ``"conjoined"`` (the sum of the class means) gets its own. Every column is cut
    through the peak of the last map.

    Parameters
    ----------
    maps : mapping of str to nibabel.Nifti1Image
        Column title -> map (e.g. each class, then ``"conjoined"``).
    mask_img : nibabel.Nifti1Image
        Brain mask on the maps' grid; values outside are not drawn.
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    from nilearn import plotting

    scales = _scales(maps, mask_img)
    n = len(maps)
    fig = Figure(figsize=(4.6 * n, 3.3))
    axes = fig.subplots(2, n, squeeze=False, height_ratios=[1.0, 0.9])
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.01, wspace=0.06, hspace=0.05)
    for j, ((name, img), scale) in enumerate(zip(maps.items(), scales, strict=True)):
        shown = _masked(img, mask_img)
        bar = j == n - 1 or scales[j + 1].vmax != scale.vmax
        common = {
            "vmax": scale.vmax,
            "threshold": scale.threshold,
            "cmap": "cold_hot" if scale.signed else "hot",
            "figure": fig,
            "symmetric_cbar": scale.signed,
            "annotate": False,
        }
        plotting.plot_stat_map(
            shown, bg_img=_template(), axes=axes[0, j], cut_coords=scale.cut_coords,
            colorbar=bar, draw_cross=False, black_bg=False, dim=-0.3, **common,
        )  # fmt: skip
        plotting.plot_glass_brain(
            shown, axes=axes[1, j], colorbar=False, plot_abs=not scale.signed, **common
        )
        fig.text((j + 0.5) / n, 0.97, name, ha="center", va="top", fontsize=12)
    return figure_to_png(fig, dpi)


def _binary_roc(ax, predictions: pd.DataFrame, positive: str) -> None:
    score = f"p_{positive}"
    y = (predictions["label"].astype(str) == positive).to_numpy()
    has_fold = "fold" in predictions
    for fold, part in predictions.groupby("fold", sort=True) if has_fold else ():
        yk = (part["label"].astype(str) == positive).to_numpy()
        if len(np.unique(yk)) < 2:
            continue
        fpr, tpr, _ = roc_curve(yk, part[score])
        auc = roc_auc_score(yk, part[score])
        ax.plot(fpr, tpr, lw=1, alpha=0.6, label=f"fold {fold} (AUC {auc:.3f})")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, predictions[score])
        auc = roc_auc_score(y, predictions[score])
        ax.plot(fpr, tpr, lw=2.5, color="black", label=f"pooled (AUC {auc:.3f})")


def plot_roc(predictions: pd.DataFrame, classes: tuple[str, ...], dpi: int = DPI) -> bytes:
    """ROC curves of out-of-fold predictions: one per fold and the pooled curve.

    Parameters
    ----------
    predictions : pandas.DataFrame
        ``predictions.tsv`` of a classification run: ``fold``, ``label`` and one
        ``p_<class>`` column per class.
    classes : tuple of str
        Class names in index order; for two classes the second is the positive class.
        With more classes, one pooled one-vs-rest curve per class is drawn.
    dpi : int

    Returns
    -------
    bytes
        PNG; the AUC of every curve is in the legend.
    """
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    if len(classes) == 2:
        _binary_roc(ax, predictions, classes[1])
        ax.set_title(f"ROC, positive class '{classes[1]}'")
    else:
        for c in classes:
            y = (predictions["label"].astype(str) == c).to_numpy()
            if len(np.unique(y)) == 2:
                fpr, tpr, _ = roc_curve(y, predictions[f"p_{c}"])
                auc = roc_auc_score(y, predictions[f"p_{c}"])
                ax.plot(fpr, tpr, lw=2, label=f"{c} vs rest (AUC {auc:.3f})")
        ax.set_title("ROC, one vs rest (pooled)")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def plot_regression(predictions: pd.DataFrame, dpi: int = DPI) -> bytes:
    """Predicted against true values of a regression run, with the MAE in the title.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Columns ``y`` and ``prediction`` (and optionally ``fold``, used for colours).
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    y = predictions["y"].to_numpy(dtype=float)
    p = predictions["prediction"].to_numpy(dtype=float)
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    folds = predictions["fold"] if "fold" in predictions else np.zeros(len(y))
    for fold in sorted(pd.unique(folds)):
        sel = np.asarray(folds == fold)
        ax.scatter(y[sel], p[sel], s=12, alpha=0.7, label=f"fold {fold}")
    lims = [float(np.nanmin([y.min(), p.min()])), float(np.nanmax([y.max(), p.max()]))]
    ax.plot(lims, lims, ls=":", color="grey")
    ax.set(xlabel="true", ylabel="predicted", title=f"MAE {np.nanmean(np.abs(p - y)):.3g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def plot_dice_matrices(matrices: Mapping[str, pd.DataFrame], dpi: int = DPI) -> bytes:
    """Heatmaps of method x method Dice, one panel per map, values written in the cells.

    Parameters
    ----------
    matrices : mapping of str to pandas.DataFrame
        Map name -> square symmetric Dice matrix (index and columns are methods).
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    n = len(matrices)
    size = max(2.6, 0.5 * max(len(m) for m in matrices.values()) + 1.0)
    fig = Figure(figsize=(size * n + 2.2, size + 1.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for k, (ax, (name, matrix)) in enumerate(zip(axes, matrices.items(), strict=True)):
        values = matrix.to_numpy(dtype=float)
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(matrix)), matrix.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(matrix)), matrix.index if k == 0 else [], fontsize=8)
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                color = "black" if v > 0.6 else "white"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
        ax.set_title(f"Dice, {name}", fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.7)
    return figure_to_png(fig, dpi)


def plot_localisation_roc(curves: pd.DataFrame, dpi: int = DPI) -> bytes:
    """ROC curves of each method's map against the planted ground-truth mask.

    Parameters
    ----------
    curves : pandas.DataFrame
        Columns ``method``, ``fpr``, ``tpr`` (points in order along each curve).
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    for method, part in curves.groupby("method", sort=True):
        fpr, tpr = part["fpr"].to_numpy(float), part["tpr"].to_numpy(float)
        order = np.lexsort((tpr, fpr))
        auc = float(np.trapezoid(tpr[order], fpr[order]))
        ax.plot(fpr[order], tpr[order], lw=1.8, label=f"{method} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("maps vs planted mask")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def _is_control(method: str) -> bool:
    return str(method).lower().startswith("random")


def plot_faithfulness(curves: pd.DataFrame, dpi: int = DPI) -> bytes:
    """Deletion and insertion curves side by side; the random control is dashed grey.

    Parameters
    ----------
    curves : pandas.DataFrame
        Columns ``method``, ``mode`` (``deletion`` / ``insertion``), ``fraction``,
        ``probability``; methods named ``random*`` are drawn as the control.
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    modes = [m for m in ("deletion", "insertion") if m in set(curves["mode"])]
    modes += sorted(set(curves["mode"]) - set(modes))
    fig = Figure(figsize=(5.0 * max(1, len(modes)), 4.0))
    axes = fig.subplots(1, max(1, len(modes)), squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=False):
        part = curves[curves["mode"] == mode]
        for method, rows in part.groupby("method", sort=True):
            rows = rows.sort_values("fraction")
            style = {"ls": "--", "color": "grey", "lw": 1.5} if _is_control(method) else {}
            ax.plot(rows["fraction"], rows["probability"], label=str(method), **style)
        ax.set(xlabel="fraction of voxels " + ("removed" if mode == "deletion" else "inserted"))
        ax.set(ylabel="class probability", title=mode, ylim=(0, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def plot_sanity(scores: pd.DataFrame, bound: float | None = None, dpi: int = DPI) -> bytes:
    """Cascading randomisation: median similarity to the trained map per stage.

    Parameters
    ----------
    scores : pandas.DataFrame
        Columns ``method``, ``stage`` (layers randomised, from the output down),
        ``layer`` (the modules added at that stage), ``spearman_abs`` and ``ssim``; the
        trained model (stage 0, similarity 1) starts every line. ``NaN`` (a constant
        map) counts as 0, as in :func:`brainmaps.analysis.sanity.sanity_summary`.
    bound : float, optional
        The pass / fail bound, drawn as a dotted line on the Spearman panel.
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    stages = scores.drop_duplicates("stage").sort_values("stage")
    labels = ["trained", *(str(n).split("+")[0] for n in stages["layer"])]
    fig = Figure(figsize=(10.0, 4.2))
    axes = fig.subplots(1, 2)
    panels = (("spearman_abs", "Spearman rank correlation of |map|"), ("ssim", "SSIM"))
    for ax, (column, title) in zip(axes, panels, strict=True):
        for method, part in scores.groupby("method", sort=True):
            values = part[column].abs() if column == "spearman_abs" else part[column]
            medians = values.fillna(0.0).groupby(part["stage"]).median()
            ax.plot([0, *medians.index], [1.0, *medians.to_numpy()], marker="o", label=method)
        if bound is not None and column == "spearman_abs":
            ax.axhline(bound, ls=":", color="grey", lw=1)
        ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
        ax.set(xlabel="randomised down to", ylabel=f"median {column}", title=title)
        ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)


def plot_roar(tables: Mapping[str, pd.DataFrame], dpi: int = DPI) -> bytes:
    """Accuracy of the retrained models against the fraction replaced, one panel per mode.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        Mode (``"roar"``, ``"kar"``) -> its table (``method``, ``fraction``,
        ``accuracy``, ``accuracy_random``; ``accuracy_std`` draws a band). The random
        ranking (the mean of ``accuracy_random`` over the methods) is dashed grey.
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    titles = {"roar": "ROAR: top of the ranking replaced", "kar": "KAR: bottom replaced"}
    fig = Figure(figsize=(5.0 * max(1, len(tables)), 4.0))
    axes = fig.subplots(1, max(1, len(tables)), squeeze=False)[0]
    for ax, (mode, table) in zip(axes, tables.items(), strict=False):
        for method, rows in table.groupby("method", sort=True):
            rows = rows.sort_values("fraction")
            f, acc = rows["fraction"].to_numpy(float), rows["accuracy"].to_numpy(float)
            (line,) = ax.plot(f, acc, marker="o", label=str(method))
            if "accuracy_std" in rows:
                std = np.nan_to_num(rows["accuracy_std"].to_numpy(float))
                ax.fill_between(f, acc - std, acc + std, color=line.get_color(), alpha=0.15)
        rnd = table.groupby("fraction")["accuracy_random"].mean().sort_index()
        ax.plot(rnd.index, rnd.to_numpy(), ls="--", color="grey", lw=1.5, marker=".",
                label="random")  # fmt: skip
        ax.set(xlabel="fraction of brain voxels replaced", ylabel="test accuracy (retrained)")
        ax.set(title=titles.get(mode, mode), xlim=(-0.02, 1.0), ylim=(0, 1.02))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_to_png(fig, dpi)
