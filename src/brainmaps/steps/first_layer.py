"""First-layer feature statistics of a run (Kan et al. 2020, appendix).

For every filter of the first convolution of each fold model, the mean activation over
the brain and the entropy of the activation distribution are computed per subject, and
the two classes are compared filter by filter with
:func:`brainmaps.analysis.group_stats.compare_groups` (FDR-corrected).

Choices, documented here once:

* **Layer.** The first ``nn.Conv3d`` in module order. ``stage="relu"`` (default) takes
  the output of the first activation module after it (for xin2019 and gap_cnn:
  conv -> BatchNorm -> ReLU, so the batch-normalised, rectified feature map the next
  layer sees); ``stage="conv"`` takes the raw convolution output.
* **Brain mask.** The MNI brain mask of the run grid is carried onto the feature grid
  through the receptive field: feature ``i`` is centred on input voxel
  ``i * stride - padding + dilation * (kernel - 1) / 2`` (floor for even kernels), so
  for the unpadded 3x3x3 conv of xin2019 feature ``i`` sits on voxel ``i + 1`` and the
  mask is cropped by one voxel on each side. Only in-mask features are summarised.
* **Entropy.** Shannon entropy in nats of a histogram of the in-mask activations with
  ``n_bins`` equal bins whose range is shared by all subjects for a given filter and
  fold model (the minimum and maximum over all of them), so entropies are comparable
  across subjects. Kan et al.'s notebook instead rescaled each subject's map by its own
  maximum to 0..255 integers and took a 256-bin histogram over the whole volume
  (background included); that entropy is invariant to each subject's scale, this one is
  not. A constant filter has entropy 0.
* **Subjects.** The first layer's response to a scan is a property of the model, not a
  prediction, so by default every fold model sees every subject of the run
  (``subjects="all"``: more power; the filters of different fold models differ, so
  groups are compared within each fold model and the counts are also summed over
  folds). ``subjects="test"`` restricts each fold model to its out-of-fold subjects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from brainmaps.analysis.group_stats import TESTS, compare_groups, count_larger
from brainmaps.data.preprocess import mni_brain_mask
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.tracing import ACTIVATIONS, receptive_field
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.steps.base import Step, record_stage, register_step
from brainmaps.utils import write_tsv

__all__ = [
    "STAGES",
    "feature_mask",
    "first_layer",
    "first_layer_activations",
    "first_layer_run",
    "first_layer_stats",
]

#: Where the first-layer activations are taken.
STAGES = ("relu", "conv")
FEATURES = ("mean_activation", "entropy")


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass early."""


def first_layer(model: nn.Module, stage: str = "relu") -> tuple[nn.Conv3d, str, nn.Module]:
    """Find the first 3D convolution of ``model`` and the module whose output is used.

    Parameters
    ----------
    model : torch.nn.Module
    stage : {"relu", "conv"}
        ``"conv"``: the convolution itself; ``"relu"``: the first activation module
        (ReLU, LeakyReLU, ELU, GELU, SiLU, ...) after it in module order.

    Returns
    -------
    conv : torch.nn.Conv3d
    name : str
        Qualified name of the captured module (e.g. ``"features.block1.relu"``).
    module : torch.nn.Module
        The captured module.

    Raises
    ------
    ConfigError
        If ``stage`` is unknown, the model has no ``Conv3d``, or no activation module
        follows it (the model may apply its nonlinearity functionally: use
        ``stage="conv"``).
    """
    if stage not in STAGES:
        raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}.")
    conv = None
    for name, module in model.named_modules():
        if conv is None and isinstance(module, nn.Conv3d):
            conv = module
            if stage == "conv":
                return conv, name, module
        elif conv is not None and isinstance(module, ACTIVATIONS):
            return conv, name, module
    if conv is None:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Conv3d layer; first-layer statistics need a "
            "3D convolutional network."
        )
    raise ConfigError(
        f"{type(model).__name__} has no activation module after its first Conv3d (it may "
        "use a functional nonlinearity); use stage='conv'."
    )


def feature_mask(mask: np.ndarray, conv: nn.Conv3d, out_shape: Sequence[int]) -> np.ndarray:
    """Carry an input-grid mask onto the output grid of ``conv`` by receptive field.

    Output voxel ``i`` (per axis) takes the mask value of the input voxel at the centre
    of its receptive field, ``floor(i * stride - padding + dilation * (kernel - 1) / 2)``;
    centres that fall in the padding are outside the mask.

    Parameters
    ----------
    mask : numpy.ndarray of bool, shape (X, Y, Z)
        The mask on the input grid.
    conv : torch.nn.Conv3d
    out_shape : sequence of 3 int
        Spatial shape of the convolution's output.

    Returns
    -------
    numpy.ndarray of bool, shape ``out_shape``
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or len(out_shape) != 3:
        raise ShapeError(f"mask and out_shape must be 3D, got {mask.shape} and {out_shape}.")
    field = receptive_field([conv], mask.ndim)
    axes = zip(mask.shape, out_shape, field.offset, field.stride, strict=True)
    index, valid = [], []
    for n_in, n_out, offset, stride in axes:
        centre = np.floor(offset + stride * np.arange(n_out)).astype(int)
        valid.append((centre >= 0) & (centre < n_in))
        index.append(np.clip(centre, 0, n_in - 1))
    out = mask[np.ix_(*index)]
    for axis, ok in enumerate(valid):
        out &= ok.reshape([-1 if a == axis else 1 for a in range(out.ndim)])
    return out


@torch.no_grad()
def first_layer_activations(model: nn.Module, x: torch.Tensor, stage: str = "relu") -> torch.Tensor:
    """The first-layer feature maps of a batch, without running the rest of the model.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode (BatchNorm uses its running statistics).
    x : torch.Tensor, shape (N, C, X, Y, Z)
    stage : {"relu", "conv"}
        See :func:`first_layer`.

    Returns
    -------
    torch.Tensor, shape (N, n_filters, X', Y', Z')

    Raises
    ------
    ShapeError
        If the captured output does not have the convolution's output shape (e.g. a
        pooling layer runs before the activation: use ``stage="conv"``).
    """
    conv, name, module = first_layer(model, stage)
    seen: dict[str, torch.Tensor] = {}

    def on_conv(_m, _i, out):
        seen["conv"] = out
        if module is conv:
            raise _Stop

    def on_module(_m, _i, out):
        if "conv" in seen:
            seen["out"] = out
            raise _Stop

    handles = [conv.register_forward_hook(on_conv)]
    if module is not conv:
        handles.append(module.register_forward_hook(on_module))
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    out = seen.get("conv") if module is conv else seen.get("out")
    if out is None or out.shape != seen["conv"].shape:
        raise ShapeError(
            f"the output of {name!r} is not the first Conv3d's feature map (shape "
            f"{None if out is None else tuple(out.shape)}); use stage='conv'."
        )
    return out


def _as_batch(volumes: Sequence[np.ndarray], idx: Sequence[int], dev: torch.device):
    arrays = [np.asarray(volumes[i], dtype=np.float32) for i in idx]
    x = torch.from_numpy(np.stack(arrays))
    return (x[:, None] if x.dim() == 4 else x).to(dev)


def _in_mask(model, volumes, idx, mask, stage, dev) -> torch.Tensor:
    """In-mask activations of a batch, shape (B, n_filters, n_mask_voxels)."""
    act = first_layer_activations(model, _as_batch(volumes, idx, dev), stage).float()
    conv = first_layer(model, stage)[0]
    fm = torch.from_numpy(feature_mask(mask, conv, act.shape[2:])).to(act.device)
    if not bool(fm.any()):
        raise ConfigError(
            "the brain mask is empty on the first layer's feature grid; check the run grid."
        )
    return act[:, :, fm]


def _entropy(vals: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, n_bins: int):
    """Shannon entropy (nats) per filter of one subject's (F, M) in-mask activations."""
    width = hi - lo
    scale = torch.where(width > 0, n_bins / torch.where(width > 0, width, 1), 0)
    idx = ((vals - lo[:, None]) * scale[:, None]).floor().clamp(0, n_bins - 1).long()
    idx += torch.arange(vals.shape[0], device=vals.device)[:, None] * n_bins
    counts = torch.bincount(idx.reshape(-1), minlength=vals.shape[0] * n_bins)
    prob = counts.reshape(vals.shape[0], n_bins).double() / vals.shape[1]
    return -(prob * torch.log(torch.where(prob > 0, prob, 1))).sum(dim=1)


def first_layer_stats(
    model: nn.Module,
    volumes: Sequence[np.ndarray],
    mask: np.ndarray,
    *,
    stage: str = "relu",
    n_bins: int = 256,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Mean activation and entropy of every first-layer filter for every volume.

    Two passes over the volumes: the first gives the means and the range of each
    filter's in-mask activations over all volumes, the second the histograms on that
    shared range (see the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode here.
    volumes : sequence of numpy.ndarray
        Volumes on the model grid, each (X, Y, Z) or (C, X, Y, Z).
    mask : numpy.ndarray of bool, shape (X, Y, Z)
        Brain mask on the input grid.
    stage : {"relu", "conv"}
    n_bins : int
        Histogram bins of the entropy.
    batch_size : int
    device : str or torch.device
    progress : bool

    Returns
    -------
    dict
        ``"mean_activation"`` and ``"entropy"``: float64 arrays (n_volumes, n_filters).
    """
    for name, value in (("n_bins", n_bins), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if len(volumes) == 0 or np.shape(mask) != np.shape(volumes[0])[-3:]:
        raise ShapeError(
            f"need at least one volume and a mask of the volumes' shape; got {len(volumes)} "
            f"volume(s) and a mask of shape {np.shape(mask)}."
        )
    dev = torch.device(device)
    model = model.eval().to(dev)
    batches = [
        range(s, min(s + batch_size, len(volumes))) for s in range(0, len(volumes), batch_size)
    ]
    bar = tqdm(total=2 * len(volumes), desc="first layer", disable=not progress, leave=False)
    means, lo, hi = [], None, None
    for idx in batches:
        vals = _in_mask(model, volumes, idx, mask, stage, dev)
        means.append(vals.double().mean(dim=2).cpu())
        b_lo, b_hi = vals.amin(dim=(0, 2)), vals.amax(dim=(0, 2))
        lo = b_lo if lo is None else torch.minimum(lo, b_lo)
        hi = b_hi if hi is None else torch.maximum(hi, b_hi)
        bar.update(len(idx))
    entropies = []
    for idx in batches:
        vals = _in_mask(model, volumes, idx, mask, stage, dev)
        entropies.extend(_entropy(v, lo, hi, n_bins).cpu() for v in vals)
        bar.update(len(idx))
    bar.close()
    return {
        "mean_activation": torch.cat(means).numpy(),
        "entropy": torch.stack(entropies).numpy(),
    }


def _checked_run(run_dir, test: str, subjects: str) -> tuple[RunFolder, dict[int, Path]]:
    if test not in TESTS:
        raise ConfigError(f"test must be one of {TESTS}, got {test!r}.")
    if subjects not in ("all", "test"):
        raise ConfigError(f"subjects must be 'all' or 'test', got {subjects!r}.")
    run = open_run(run_dir)
    if not run.task.is_classification or len(run.classes) != 2:
        raise ConfigError(
            f"first-layer statistics compare two classes, but run {run.path} is a "
            f"{run.task} run with classes {list(run.classes)}; use a two-class "
            "classification run."
        )
    checkpoints = run.fold_models()
    return run, checkpoints


def _fold_rows(stats: dict, groups: np.ndarray, classes, fold: int, test: str, alpha: float):
    tables = []
    for feature in FEATURES:
        df = compare_groups(stats[feature], groups, test=test, alpha=alpha, classes=classes)
        df.insert(0, "fold", str(fold))
        df.insert(2, "feature", feature)
        df.insert(3, "test", test)
        tables.append(df)
    return tables


def _summary(table: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    rows = []
    for fold in [*pd.unique(table["fold"]), "all"]:
        for feature in FEATURES:
            part = table[table["feature"] == feature]
            counts = count_larger(part if fold == "all" else part[part["fold"] == fold])
            row = {"fold": fold, "feature": feature}
            row |= {"n_filters": counts["n_filters"], "n_significant": counts["n_significant"]}
            row |= {f"larger_in_{c}": counts[c] for c in classes}
            rows.append(row)
    return pd.DataFrame(rows)


def first_layer_run(
    run_dir: str | os.PathLike,
    test: str = "mannwhitney",
    alpha: float = 0.05,
    *,
    stage: str = "relu",
    n_bins: int = 256,
    subjects: str = "all",
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Compare the first-layer filters of every fold model between the two classes.

    For each fold model, the mean activation over the brain and the entropy of every
    first-layer filter are computed for the subjects (all of the run by default; see
    the module docstring), and each feature is compared between the classes filter by
    filter (Benjamini-Hochberg FDR over the filters of one fold model and feature).

    Writes ``<run>/analysis/first_layer.tsv`` (columns ``fold, filter, feature, test,
    statistic, p, q, mean_<A>, mean_<B>, larger_in, significant``; ``feature`` is
    ``mean_activation`` or ``entropy``) and ``<run>/analysis/first_layer_summary.tsv``
    (``fold, feature, n_filters, n_significant, larger_in_<A>, larger_in_<B>``, one row
    per fold and feature plus ``fold = "all"``: the counts summed over fold models).

    Parameters
    ----------
    run_dir : str or os.PathLike
        A finished two-class classification run folder.
    test : {"mannwhitney", "ttest"}
    alpha : float
        FDR level.
    stage : {"relu", "conv"}
        Activation after the first nonlinearity (default) or raw convolution output.
    n_bins : int
        Histogram bins of the entropy (256, as Kan et al.).
    subjects : {"all", "test"}
        Subjects passed through each fold model.
    batch_size : int
    device : {"auto", "cpu", "cuda"}
    progress : bool

    Returns
    -------
    pathlib.Path
        The written ``first_layer.tsv``.

    Raises
    ------
    ConfigError
        For a regression or multi-class run, missing fold models or bad parameters.

    References
    ----------
    .. [1] M. Kan et al., "Interpretation of 3D CNNs for Brain MRI Data Classification",
       AIST 2020, arXiv:2006.15969 (appendix).
    """
    run, checkpoints = _checked_run(run_dir, test, subjects)
    compare_groups(np.zeros((4, 1)), [0, 0, 1, 1], test=test, alpha=alpha)  # fail early
    dev = resolve_device(device)
    volumes = run.volumes(progress=progress)
    mask = mni_brain_mask(run.grid)
    names = np.asarray(run.classes, dtype=object)[run.labels]
    tables = []
    for k in tqdm(range(run.n_folds), desc="first-layer folds", disable=not progress):
        idx = np.arange(len(run.table)) if subjects == "all" else run.indices(k, "test")
        model, _ = model_from_checkpoint(checkpoints[k])
        stats = first_layer_stats(
            model,
            [volumes[int(i)] for i in idx],
            mask,
            stage=stage,
            n_bins=n_bins,
            batch_size=batch_size,
            device=dev,
            progress=progress,
        )
        tables += _fold_rows(stats, names[idx], run.classes, k, test, alpha)
    table = pd.concat(tables, ignore_index=True)
    out = run.layout.analysis("first_layer")
    write_tsv(table, out)
    write_tsv(_summary(table, run.classes), run.layout.analysis("first_layer_summary"))
    record_stage(
        run, "first_layer", test=test, alpha=alpha, stage=stage, n_bins=n_bins,
        subjects=subjects,
    )  # fmt: skip
    return out


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    return None if run.task.is_classification else "classification runs only"


STEP = register_step(
    Step(
        name="first_layer",
        order=60,
        command="brainmaps first-layer",
        output=lambda run, options: run.layout.analysis("first_layer"),
        compute=lambda run, methods, options: first_layer_run(
            run, device=options.get("device", "auto"), progress=options.get("progress", True)
        ),
        skip=_skip,
        inputs=lambda run: run.checkpoints(),
    )
)
