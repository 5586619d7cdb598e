"""Meaningful Perturbations (Fong & Vedaldi 2017) in 3D, as used by Kan et al. (2020).

:class:`MeaningfulPerturbation` solves the same problem as a faithful sequential
implementation, kept here as :class:`_SequentialReference` (the oracle of the tests and
of ``benchmarks/meaningful_perturbation.py``), many times faster (see its Notes).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.attribution._filters import (
    apply_separable,
    gaussian_blur3d,
    gaussian_matrix,
    linear_resize_matrix,
)
from brainmaps.attribution._grid import grid_voxel_size, to_voxels, voxel_size_option
from brainmaps.attribution.base import AttributionMethod, check_options, register_method
from brainmaps.exceptions import ConfigError

__all__ = [
    "KAN2020_OPTIONS",
    "MeaningfulPerturbation",
    "VoxelSettings",
    "blur_perturbation",
    "mask_matrices",
]

#: Kan et al.'s sizes: their 10, 10, 4 and 5 voxels of the 3.13 mm 58x70x58 grid, in mm.
#: The defaults keep their blur and mask cells but smooth the mask and jitter the input by
#: 5 mm: with 31.3 mm the conjoined map of the demo run localised the planted regions at
#: ROC AUC 0.579 (20 subjects), with 5 mm at 0.832 (``sigma_mask_mm`` alone: 0.722).
KAN2020_OPTIONS = {
    "sigma_blur_mm": 31.3,
    "sigma_mask_mm": 31.3,
    "mask_voxel_mm": 12.52,
    "jitter_mm": 15.65,
}

#: On the CPU, volumes per pass are limited to this many voxels in all: per volume,
#: xin2019's forward and backward pass was fastest with 1 volume per pass at 58x70x58
#: and 2 at 36x44x36 (larger batches spill the activations out of the cache).
_CPU_BATCH_VOXELS = 2**17


def blur_perturbation(x: torch.Tensor, mask: torch.Tensor, blurred: torch.Tensor) -> torch.Tensor:
    """The deletion operator ``Φ(x, m) = m ⊙ x + (1 − m) ⊙ blurred``.

    ``x`` (volumes ``(N, C, X, Y, Z)``) is kept where the mask (in [0, 1], broadcastable
    to ``x``) is 1 and replaced by ``blurred`` (usually ``gaussian_blur3d(x, sigma)``)
    where it is 0.
    """
    return blurred + mask * (x - blurred)


def mask_matrices(
    low_shape: Sequence[int],
    shape: Sequence[int],
    sigma_mask: float | Sequence[float],
    truncate: float = 3.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """Per-axis matrices of "upsample trilinearly, then smooth with a Gaussian".

    Both steps are linear and separable, so on axis ``k`` they are one
    ``(shape[k], low_shape[k])`` matrix; ``apply_separable(m, matrices)`` equals
    ``gaussian_blur3d(F.interpolate(m, size=shape, mode="trilinear",
    align_corners=False), sigma_mask, truncate)`` (tested) at a fraction of the cost.
    ``low_shape`` and ``shape`` are the spatial shapes of the mask and of the input;
    ``sigma_mask`` is in voxels of the input grid, one for all axes or one per axis.
    """
    sigmas = sigma_mask if isinstance(sigma_mask, Sequence) else [sigma_mask] * len(shape)
    return [
        (
            gaussian_matrix(n, sigma, truncate, dtype=torch.float64, device=device)
            @ linear_resize_matrix(low, n, dtype=torch.float64, device=device)
        ).to(dtype)
        for low, n, sigma in zip(low_shape, shape, sigmas, strict=True)
    ]


def _regulariser(m: torch.Tensor, l1_coeff: float, tv_coeff: float, beta: float) -> torch.Tensor:
    """``λ1 mean(1 − m) + λ2 Σ_axes mean(|∂_axis m|^β)`` per sample (``m`` in [0, 1])."""
    dims = list(range(1, m.dim()))
    l1 = (1 - m).mean(dim=dims)
    tv = sum(m.diff(dim=d).abs().pow(beta).mean(dim=dims) for d in range(2, m.dim()))
    return l1_coeff * l1 + tv_coeff * tv


def _class_score(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each sample's target class; the output for regression."""
    if out.shape[1] == 1:
        return out[:, 0]
    return out.softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(1)


def _number(name: str, value, low: float, low_ok: bool = True, high: float = math.inf) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (value == low and not low_ok) or value >= high:
        bound = f"{'>=' if low_ok else '>'} {low}" + (f" and < {high}" if high < math.inf else "")
        raise ConfigError(
            f"meaningful_perturbation option {name} must be a number {bound}, got {value!r}."
        )
    return float(value)


def _integer(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(
            f"meaningful_perturbation option {name} must be an integer >= {low}, got {value!r}."
        )
    return int(value)


@dataclass(frozen=True)
class VoxelSettings:
    """The millimetre options of :class:`MeaningfulPerturbation` on one input grid.

    Attributes
    ----------
    voxel_size : tuple of float
        mm per voxel along each axis.
    sigma_blur, sigma_mask : tuple of float
        Gaussian sigmas per axis, in voxels (``mm / voxel_size``, not rounded).
    jitter : tuple of int
        Largest shift per axis, in whole voxels.
    mask_shape : tuple of int
        Voxels of the optimised mask per axis.
    """

    voxel_size: tuple[float, ...]
    sigma_blur: tuple[float, ...]
    sigma_mask: tuple[float, ...]
    jitter: tuple[int, ...]
    mask_shape: tuple[int, ...]


def _crop(v: torch.Tensor, offset: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """The window of size ``shape`` at ``offset`` on the last axes of ``v``."""
    return v[(Ellipsis, *(slice(o, o + n) for o, n in zip(offset, shape, strict=True)))]


@register_method("meaningful_perturbation")
class MeaningfulPerturbation(AttributionMethod):
    """Meaningful Perturbations: the smallest smooth region whose blurring deletes the score.

    For each input ``x`` and target class ``c`` a mask ``m`` in [0, 1] (1 keeps a voxel,
    0 replaces it by its blurred value) minimises, as in Fong & Vedaldi [1]_ and Kan et
    al. [2]_ (eq. 1-3)::

        λ1 mean(1 − m) + λ2 Σ_a mean(|∂_a m|^β) + (1/n) Σ_k f_c(Φ(x(· − τ_k), M)),
        Φ(x, M) = M ⊙ x + (1 − M) ⊙ blur_σ0(x),     M = G_σm(upsample_s(m)).

    * Sizes are options in millimetres, converted per axis with the inputs' voxel size
      (:meth:`in_voxels`), so they mean the same at any grid. The blur and the mask's
      cells are Kan et al.'s values in voxels of their 58x70x58 MNI grid times its mean
      voxel, 3.13 mm; the mask smoothing and the jitter are 5 mm, not their 31.3 and
      15.65 mm, which blur the mask far beyond regions a few voxels across
      (:data:`KAN2020_OPTIONS` are theirs).
    * ``m`` lives on a coarser grid, of voxels of at most ``mask_voxel_mm`` (Kan et
      al.'s factor ``s = 4`` at 58x70x58); ``M`` is its trilinear upsampling to the input size
      (``align_corners=False``) smoothed by a Gaussian of ``sigma_mask_mm``.
    * The L1 and total-variation terms act on ``m`` (the optimised variable, as in the
      authors' code) and are means, not sums: ``mean(1 − m)`` over the mask's voxels
      (equal to ``‖1 − m‖₁ / |m|`` since ``m <= 1``) and, for each axis ``a``, the mean of
      ``|m(v + e_a) − m(v)|^β`` over the differences along it, summed over the axes. So
      ``l1_coeff`` and ``tv_coeff`` keep their meaning at any resolution.
    * ``f_c`` is the softmax probability of the target class (regression: the output).
    * Jitter ``τ_k``: the input is zero-padded by ``j_a`` voxels on both faces of each
      axis ``a`` (``jitter_mm`` in voxels of that axis) and a random crop of the input
      size is taken (each shift in ``-j_a..j_a`` equally likely); ``n_draws`` shifts per
      iteration. The mask is not shifted. The blurred copy is the blur of the
      zero-padded volume, cropped at the same place, so blurring and shifting commute as
      on an unbounded grid:
      ``Φ(x(· − τ), M) = M ⊙ x(· − τ) + (1 − M) ⊙ (blur_σ0 x)(· − τ)``.
    * Blurs are true Gaussians (:func:`~brainmaps.attribution._filters.gaussian_blur3d`,
      kernel radius ``truncate`` sigmas, "reflect" faces), not the box filter of the
      papers' code.
    * Adam (``lr``, ``betas``) from ``m = 1`` (nothing deleted, as in the public
      PyTorch port of Fong & Vedaldi's code); ``m`` is clamped to [0, 1] after each step.

    The returned map is ``1 − M`` at the input's resolution: high where deleting the
    voxel lowers the target score (1: fully deleted).

    Parameters
    ----------
    model : torch.nn.Module
    sigma_blur_mm : float
        ``σ0``: sigma of the Gaussian blur that replaces deleted voxels, in mm (default
        31.3 mm: the paper's 10 voxels of 3.13 mm), ``sigma_blur_mm / voxel_size``
        voxels per axis (not rounded). 0: no blur, so nothing can be deleted.
    sigma_mask_mm : float
        ``σm``: sigma of the Gaussian that smooths the upsampled mask, in mm (default
        5 mm; Kan et al.: 31.3 mm, 10 voxels at 58x70x58), per axis like
        ``sigma_blur_mm``. 0 disables it.
    l1_coeff : float
        ``λ1``: weight of the mean deleted fraction ``mean(1 − m)``.
    tv_coeff : float
        ``λ2``: weight of the total-variation term.
    tv_beta : float
        ``β`` (>= 1): exponent of the total variation; large values penalise only jumps.
    mask_voxel_mm : float
        Edge of the mask's voxels in mm (default 12.52 mm: the paper's ``s = 4`` voxels
        at 58x70x58). Along an axis of ``X`` voxels of ``v`` mm the mask has
        ``ceil(X v / mask_voxel_mm)`` voxels (15x18x15 over the MNI box at any grid), at
        least 1 and at most ``X``. It replaces the paper's factor ``s`` (``ceil(X / s)``
        voxels) because the mask's resolution is a physical size: with a fixed factor a
        finer input grid makes a finer mask in mm, and the total-variation term, which
        penalises jumps between neighbouring mask voxels, then means something else.
    jitter_mm : float
        ``j``: largest shift per axis, in mm (default 5 mm; Kan et al.: 15.65 mm, 5
        voxels at 58x70x58),
        rounded per axis to the nearest whole number of voxels (halves up) and at least
        one voxel when positive, so that a small jitter is not lost on a coarse grid;
        0 disables jitter.
    n_draws : int
        Shifts per iteration (the expectation over ``τ`` is their mean).
    lr : float
        Adam learning rate (in mask units per step).
    betas : pair of float
        Adam's moment decay rates.
    max_iter : int
        Largest number of iterations (the sequential solver always runs this many).
    tol : float
        A subject stops when the mean objective over its last ``patience`` iterations is
        not below the mean over the ``patience`` before by more than ``tol`` times the
        latter; 0 never stops early (always ``max_iter`` iterations).
    patience : int
        Window length in iterations (a subject runs at least ``2 * patience - 1``).
    seed : int
        Seed of the shifts. Every subject sees the same sequence of shifts, so a map does
        not depend on the batch it was computed in.
    max_batch : int or None
        Most volumes per forward/backward pass. None: on a GPU all ``n_draws × N`` copies
        in one pass; on the CPU as many as hold 2^17 voxels in all (1 volume at 58x70x58,
        2 at 36x44x36), the fastest per volume on the CPUs we measured, where larger
        batches spill out of the cache. Results are the same up to rounding; memory grows
        with it (about 100 MB per volume for xin2019 at 58x70x58).
    truncate : float
        Gaussian kernels stop at ``truncate`` sigmas.
    voxel_size : float or sequence of 3 float, optional
        mm per voxel of the inputs; by default that of ``brainmaps.data.mni_grid`` of the
        input shape (the grid brainmaps resamples to).
    **options
        Nothing else is accepted; the former options in voxels of the model grid
        (``sigma_blur``, ``sigma_mask``, ``mask_scale``, ``jitter``) are refused with a
        :class:`~brainmaps.exceptions.ConfigError` that gives their value in mm.

    Attributes
    ----------
    n_iter_ : torch.Tensor
        Iterations run for each subject of the last call, ``(N,)``.
    history_ : torch.Tensor
        Objective of each subject at each iteration of the last call, ``(iterations, N)``
        (NaN once a subject has stopped).

    Notes
    -----
    Same problem as the faithful sequential solver, many times faster: the ``n_draws``
    shifted copies of all subjects still running go through the network together, at
    most ``max_batch`` volumes per pass (gradients are summed over passes, so chunking
    does not change the result); the blurred volume is computed once per subject; mask
    upsampling and smoothing are one small matrix per axis; a subject stops, and leaves
    the batch, once its objective has stopped improving (see ``tol``). The mask itself
    never settles: jitter makes its gradients noisy and Adam keeps moving the unclamped
    voxels of ``m`` by up to ~0.1 per step, so a rule on ``|Δm|`` would never fire; the
    objective is flat after 10-30 iterations on the demo run, where the sequential solver
    spends its other 270 iterations.

    References
    ----------
    .. [1] R. C. Fong, A. Vedaldi, "Interpretable Explanations of Black Boxes by
       Meaningful Perturbation", ICCV 2017, arXiv:1704.03296.
    .. [2] M. Kan et al., "Interpretation of 3D CNNs for Brain MRI Data Classification",
       AIST 2020, arXiv:2006.15969.
    """

    renamed_to_mm: ClassVar[dict[str, str]] = {
        "sigma_blur": "sigma_blur_mm",
        "sigma_mask": "sigma_mask_mm",
        "mask_scale": "mask_voxel_mm",
        "jitter": "jitter_mm",
    }

    def __init__(
        self,
        model: nn.Module,
        *,
        sigma_blur_mm: float = 31.3,
        sigma_mask_mm: float = 5.0,
        l1_coeff: float = 3.0,
        tv_coeff: float = 1.0,
        tv_beta: float = 7.0,
        mask_voxel_mm: float = 12.52,
        jitter_mm: float = 5.0,
        n_draws: int = 10,
        lr: float = 0.3,
        betas: Sequence[float] = (0.9, 0.99),
        max_iter: int = 300,
        tol: float = 0.01,
        patience: int = 10,
        seed: int = 0,
        max_batch: int | None = None,
        truncate: float = 3.0,
        voxel_size: float | Sequence[float] | None = None,
        **options,
    ) -> None:
        if options:  # a former option in voxels is refused with its mm at these voxels
            check_options(self.name, {**options, "voxel_size": voxel_size})
        super().__init__(model)
        self.sigma_blur_mm = _number("sigma_blur_mm", sigma_blur_mm, 0.0)
        self.sigma_mask_mm = _number("sigma_mask_mm", sigma_mask_mm, 0.0)
        self.l1_coeff = _number("l1_coeff", l1_coeff, 0.0)
        self.tv_coeff = _number("tv_coeff", tv_coeff, 0.0)
        self.tv_beta = _number("tv_beta", tv_beta, 1.0)
        self.mask_voxel_mm = _number("mask_voxel_mm", mask_voxel_mm, 0.0, low_ok=False)
        self.jitter_mm = _number("jitter_mm", jitter_mm, 0.0)
        self.n_draws = _integer("n_draws", n_draws, 1)
        self.lr = _number("lr", lr, 0.0, low_ok=False)
        self.betas = _betas(betas)
        self.max_iter = _integer("max_iter", max_iter, 1)
        self.tol = _number("tol", tol, 0.0)
        self.patience = _integer("patience", patience, 1)
        self.seed = _integer("seed", seed, 0)
        self.max_batch = None if max_batch is None else _integer("max_batch", max_batch, 1)
        self.truncate = _number("truncate", truncate, 0.0, low_ok=False)
        self.voxel_size = voxel_size_option("meaningful_perturbation", voxel_size)

    def in_voxels(self, shape: Sequence[int]) -> VoxelSettings:
        """The millimetre options in voxels of an input grid of spatial ``shape``.

        Examples
        --------
        >>> from torch import nn
        >>> MeaningfulPerturbation(nn.Identity(), voxel_size=2.0).in_voxels((40, 40, 40)).jitter
        (8, 8, 8)
        """
        shape = tuple(int(n) for n in shape)
        sizes = grid_voxel_size(shape, self.voxel_size)
        j = self.jitter_mm
        return VoxelSettings(
            voxel_size=sizes,
            sigma_blur=tuple(self.sigma_blur_mm / v for v in sizes),
            sigma_mask=tuple(self.sigma_mask_mm / v for v in sizes),
            jitter=tuple(0 if j == 0 else to_voxels(j, v) for v in sizes),
            mask_shape=tuple(
                min(n, max(1, math.ceil(n * v / self.mask_voxel_mm - 1e-9)))
                for n, v in zip(shape, sizes, strict=True)
            ),
        )

    # -- pieces shared with the sequential reference --------------------------------------
    def _offsets(self, x: torch.Tensor, jitter: Sequence[int]) -> list:
        """Crop offsets in ``0..2 j_a`` per iteration, draw and axis (one seed for all).

        One draw in ``0..L-1`` per axis, ``L`` the least common multiple of the
        ``2 j_a + 1``, taken modulo ``2 j_a + 1``: uniform on every axis, and the draws
        of a jitter equal on all axes are those of ``randint(0, 2 j + 1)``.
        """
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        size = (self.max_iter, self.n_draws, x.dim() - 2)
        counts = [2 * j + 1 for j in jitter]
        draws = torch.randint(0, math.lcm(*counts), size, generator=gen, device=x.device)
        return (draws % torch.tensor(counts, device=x.device)).tolist()

    def _pad(self, x: torch.Tensor, jitter: Sequence[int]) -> torch.Tensor:
        return F.pad(x, [p for j in reversed(jitter) for p in (j, j)])

    def _chunk(self, n_items: int, voxels: int, device: torch.device) -> int:
        """Volumes per forward/backward pass (see ``max_batch``)."""
        if self.max_batch is not None:
            return self.max_batch
        if device.type == "cpu":
            return max(1, _CPU_BATCH_VOXELS // voxels)
        return n_items

    def _regulariser(self, m: torch.Tensor) -> torch.Tensor:
        return _regulariser(m, self.l1_coeff, self.tv_coeff, self.tv_beta)

    # -- the fast solver -------------------------------------------------------------------
    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n, shape = x.shape[0], tuple(x.shape[2:])
        grid = self.in_voxels(shape)
        padded = self._pad(x, grid.jitter)
        blurred = gaussian_blur3d(padded, grid.sigma_blur, self.truncate)  # once per subject
        mats = mask_matrices(
            grid.mask_shape, shape, grid.sigma_mask, self.truncate, dtype=x.dtype, device=x.device
        )
        params = [
            torch.ones((1, *grid.mask_shape), dtype=x.dtype, device=x.device, requires_grad=True)
            for _ in range(n)
        ]
        stop = _Convergence(n, self.tol, self.patience)
        data = (blurred, padded - blurred, targets)
        with torch.enable_grad():
            final = self._solve(params, mats, data, self._offsets(x, grid.jitter), stop)
        self.n_iter_, self.history_ = stop.n_iter, stop.history()
        return 1 - torch.stack(final)[:, 0]

    def _solve(self, params: list, mats: list, data: tuple, offsets: list, stop) -> list:
        """Adam on every subject until it stops; return each subject's final ``M``."""
        opt = torch.optim.Adam(params, lr=self.lr, betas=self.betas)
        final, active = [None] * len(params), list(range(len(params)))
        for it in range(self.max_iter + 1):
            m = torch.stack([params[i] for i in active])
            mask = apply_separable(m, mats)
            if it == self.max_iter:
                stop.finish(active, it)
            else:
                stop.update(active, self._objective_step(m, mask, data, active, offsets[it]), it)
            for k, i in enumerate(active):
                if stop.n_iter[i] >= 0:
                    final[i] = mask[k].detach()
                    params[i].grad = None  # Adam skips it: the subject keeps this mask
            active = [i for i in active if stop.n_iter[i] < 0]
            if not active:
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for i in active:
                    params[i].clamp_(0, 1)
        return final

    def _objective_step(self, m, mask, data, active, offsets) -> torch.Tensor:
        """Objective of each active subject (CPU); leaves its gradient in the parameters.

        ``mask`` is the upsampled, smoothed ``m``; the network's gradient with respect
        to it is accumulated over the passes, then carried back to ``m`` in one step.
        """
        blurred, diff, targets = data
        shape = tuple(mask.shape[2:])
        leaf = mask.detach().requires_grad_(True)
        subjects = torch.tensor(active, device=targets.device)
        items = [(d, k) for d in range(len(offsets)) for k in range(len(active))]
        size = self._chunk(len(items), math.prod(shape) * diff.shape[1], m.device)
        scores = torch.zeros(len(active), dtype=m.dtype, device=m.device)
        for start in range(0, len(items), size):
            part = items[start : start + size]
            phi = torch.stack(
                [
                    _crop(blurred[active[k]], offsets[d], shape)
                    + leaf[k] * _crop(diff[active[k]], offsets[d], shape)
                    for d, k in part
                ]
            )
            rows = torch.tensor([k for _, k in part], device=targets.device)
            f = _class_score(self._forward(phi), targets[subjects[rows]]) / len(offsets)
            f.sum().backward()
            scores.index_add_(0, rows.to(m.device), f.detach())
        reg = self._regulariser(m)
        torch.autograd.backward([reg.sum(), mask], [None, leaf.grad])
        return (reg.detach() + scores).cpu()


class _Convergence:
    """Per-subject stopping rule on the objective, and the objective's history.

    A subject stops once the mean objective over its last ``patience`` iterations is no
    longer below the mean over the ``patience`` before by more than ``tol`` times the
    latter (``tol == 0`` never stops early). ``n_iter[i]`` is -1 while subject ``i`` runs,
    then the number of optimiser steps it took.
    """

    def __init__(self, n: int, tol: float, patience: int) -> None:
        self.tol, self.patience = tol, patience
        self.values: list[list[float]] = [[] for _ in range(n)]
        self.n_iter = torch.full((n,), -1, dtype=torch.long)

    def update(self, active: list, values: torch.Tensor, it: int) -> None:
        """Record the objective of the ``active`` subjects at iteration ``it``."""
        w = self.patience
        for i, value in zip(active, values.tolist(), strict=True):
            history = self.values[i]
            history.append(value)
            if self.tol > 0 and len(history) >= 2 * w:
                before, last = sum(history[-2 * w : -w]) / w, sum(history[-w:]) / w
                if before - last <= self.tol * abs(before):
                    self.n_iter[i] = it

    def finish(self, active: list, it: int) -> None:
        """Stop the ``active`` subjects after ``it`` steps (the cap)."""
        self.n_iter[active] = it

    def history(self) -> torch.Tensor:
        """``(iterations, N)`` objective values, NaN after a subject stopped."""
        out = torch.full((max(map(len, self.values)), len(self.values)), math.nan)
        for i, values in enumerate(self.values):
            out[: len(values), i] = torch.tensor(values)
        return out


def _betas(value) -> tuple[float, float]:
    try:
        b1, b2 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"meaningful_perturbation option betas must be two numbers in [0, 1), got {value!r}."
        ) from None
    _number("betas[0]", b1, 0.0, high=1.0)
    _number("betas[1]", b2, 0.0, high=1.0)
    return b1, b2


class _SequentialReference(MeaningfulPerturbation):
    """Faithful sequential Meaningful Perturbations: the oracle of the tests and benchmark.

    One jitter draw per forward/backward pass (``n_draws`` passes per iteration, their
    losses averaged), exactly ``max_iter`` iterations (no convergence test), one subject
    at a time; the blurred volume is recomputed for every draw and the mask is upsampled
    with ``F.interpolate`` and smoothed with :func:`gaussian_blur3d` at full resolution
    every iteration. Same objective, same draws (same seed) as the fast solver.
    """

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        n, shape = x.shape[0], tuple(x.shape[2:])
        grid = self.in_voxels(shape)
        offsets = self._offsets(x, grid.jitter)
        maps, history = [], torch.full((self.max_iter, n), math.nan)
        for i in range(n):
            m = torch.ones(
                (1, 1, *grid.mask_shape), dtype=x.dtype, device=x.device, requires_grad=True
            )
            opt = torch.optim.Adam([m], lr=self.lr, betas=self.betas)
            for it in range(self.max_iter):
                with torch.enable_grad():
                    history[it, i] = self._iteration(x[i : i + 1], targets[i], m, offsets[it], grid)
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    m.clamp_(0, 1)
            with torch.no_grad():
                maps.append(1 - self._upsample(m, shape, grid)[0, 0])
        self.n_iter_, self.history_ = torch.full((n,), self.max_iter), history
        return torch.stack(maps)

    def _upsample(self, m: torch.Tensor, shape, grid: VoxelSettings) -> torch.Tensor:
        up = F.interpolate(m, size=shape, mode="trilinear", align_corners=False)
        return gaussian_blur3d(up, grid.sigma_mask, self.truncate)

    def _iteration(self, x, target, m, offsets, grid: VoxelSettings) -> float:
        shape = tuple(x.shape[2:])
        mask = self._upsample(m, shape, grid)
        reg = self._regulariser(m).sum()
        value = float(reg.detach())
        reg.backward()
        for offset in offsets:
            padded = self._pad(x, grid.jitter)
            blurred = gaussian_blur3d(padded, grid.sigma_blur, self.truncate)
            phi = blur_perturbation(
                _crop(padded, offset, shape), mask, _crop(blurred, offset, shape)
            )
            f = _class_score(self._forward(phi), target.view(1)).sum() / len(offsets)
            f.backward(retain_graph=True)
            value += float(f.detach())
        return value
