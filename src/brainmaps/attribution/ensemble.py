"""One attribution map for a new scan from a run's fold ensemble.

A scan outside the run has no out-of-fold model: every fold model is a fair judge, and
the ensemble's prediction is their mean. Its map is the mean of the fold models' maps of
the same output unit (the ensemble's predicted class), each map divided first by its
largest absolute value so that every fold model weighs the same whatever the scale of
its raw attributions. Signs are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from brainmaps.attribution.base import create_method
from brainmaps.attribution.cohort import _method_kwargs
from brainmaps.exceptions import ShapeError

__all__ = ["ensemble_map", "method_settings"]


def method_settings(
    methods: Sequence[str], options: dict[str, dict] | None = None, shape=None
) -> dict[str, dict]:
    """Check method names and options once, before any scan is explained.

    Parameters
    ----------
    methods : sequence of str
        Registry names (:func:`brainmaps.attribution.list_methods`).
    options : dict, optional
        Options per method, e.g. ``{"occlusion": {"window_mm": 12}}``.
    shape : tuple of int, optional
        The model grid, to convert a former option in voxels into its mm message.

    Returns
    -------
    dict
        ``{method: options}`` ready for :func:`ensemble_map`.

    Raises
    ------
    ConfigError
        An unknown method, or options for a method not in ``methods``.
    """
    return _method_kwargs(list(dict.fromkeys(methods)), None, options, shape)


def ensemble_map(
    models: Sequence[nn.Module],
    volume: np.ndarray,
    method: str,
    *,
    unit: int | None = None,
    options: dict | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The fold-ensemble map of one volume.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        The fold models (on ``device``).
    volume : numpy.ndarray
        One preprocessed subject, ``(X, Y, Z)`` or ``(C, X, Y, Z)``.
    method : str
        Registry name of the attribution method.
    unit : int, optional
        The output unit every model explains: the ensemble's predicted class for
        classification; ``None`` for regression (the one output).
    options : dict, optional
        Options of the method (checked by :func:`method_settings`).
    device : str or torch.device

    Returns
    -------
    numpy.ndarray
        ``(X, Y, Z)`` float32: the mean over models of each model's map divided by its
        maximum absolute value (a model whose map is all zero adds zeros).

    Raises
    ------
    ShapeError
        If ``volume`` is not 3-D or 4-D, or no model is given.
    """
    if not models:
        raise ShapeError("ensemble_map needs at least one model.")
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim not in (3, 4):
        raise ShapeError(f"volume has shape {volume.shape}; expected (X, Y, Z) or (C, X, Y, Z).")
    x = torch.from_numpy(volume[None] if volume.ndim == 4 else volume[None, None]).to(device)
    target = "predicted" if unit is None else int(unit)
    total = np.zeros(volume.shape[-3:], dtype=np.float64)
    for model in models:
        explainer = create_method(method, model, **dict(options or {}))
        raw = explainer.attribute(x, target=target)[0].cpu().numpy().astype(np.float64)
        scale = np.abs(raw).max()
        if scale > 0 and np.isfinite(scale):
            total += raw / scale
    return (total / len(models)).astype(np.float32)
