"""Meaningful Perturbations (Fong & Vedaldi 2017) in 3D, as used by Kan et al. (2020).

:class:`MeaningfulPerturbation` solves the same problem as a faithful sequential
implementation, kept here as :class:`_SequentialReference` (the oracle of the tests and
of ``benchmarks/meaningful_perturbation.py``), many times faster (see its Notes).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.attribution._filters import (
    apply_separable,
    gaussian_blur3d,
    gaussian_matrix,
    linear_resize_matrix,
)
from brainmaps.attribution.base import AttributionMethod, register_method
from brainmaps.exceptions import ConfigError

__all__ = ["MeaningfulPerturbation", "blur_perturbation", "mask_matrices"]

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
    sigma_mask: float,
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
    ``sigma_mask`` is in voxels of the input grid.
    """
    return [
        (
            gaussian_matrix(n, sigma_mask, truncate, dtype=torch.float64, device=device)
            @ linear_resize_matrix(low, n, dtype=torch.float64, device=device)
        ).to(dtype)
        for low, n in zip(low_shape, shape, strict=True)
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

    * ``m`` lives on a grid ``mask_scale`` (``s``) times coarser than the input
      (``ceil(X / s)`` voxels per axis); ``M`` is its trilinear upsampling to the input
      size (``align_corners=False``) smoothed by a Gaussian of ``sigma_mask``.
    * The L1 and total-variation terms act on ``m`` (the optimised variable, as in the
      authors' code) and are means, not sums: ``mean(1 − m)`` over the mask's voxels
      (equal to ``‖1 − m‖₁ / |m|`` since ``m <= 1``) and, for each axis ``a``, the mean of
      ``|m(v + e_a) − m(v)|^β`` over the differences along it, summed over the axes. So
      ``l1_coeff`` and ``tv_coeff`` keep their meaning at any resolution.
    * ``f_c`` is the softmax probability of the target class (regression: the output).
    * Jitter ``τ_k``: the input is zero-padded by ``jitter`` voxels on every face and a
      random crop of the input size is taken (each shift in ``-jitter..jitter`` per axis
      equally likely); ``n_draws`` shifts per iteration. The mask is not shifted. The
      blurred copy is the blur of the zero-padded volume, cropped at the same place, so
      blurring and shifting commute as on an unbounded grid:
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
    sigma_blur : float
        ``σ0``: sigma of the blur that replaces deleted voxels, in voxels of the model grid
        (10 voxels = 31 mm on the paper's 58x70x58 MNI grid of 3.1 mm voxels).
    sigma_mask : float
        ``σm``: sigma of the Gaussian that smooths the upsampled mask, in voxels of the
        model grid (10 voxels = 31 mm at 58x70x58). 0 disables it.
    l1_coeff : float
        ``λ1``: weight of the mean deleted fraction ``mean(1 − m)``.
    tv_coeff : float
        ``λ2``: weight of the total-variation term.
    tv_beta : float
        ``β`` (>= 1): exponent of the total variation; large values penalise only jumps.
    mask_scale : int
        ``s``: the mask has ``ceil(X / s)`` voxels per axis (s = 4: 15x18x15 at 58x70x58).
    jitter : int
        ``j``: largest shift per axis, in voxels of the model grid (5 voxels = 16 mm at
        58x70x58); 0 disables jitter.
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

    def __init__(
        self,
        model: nn.Module,
        *,
        sigma_blur: float = 10.0,
        sigma_mask: float = 10.0,
        l1_coeff: float = 3.0,
        tv_coeff: float = 1.0,
        tv_beta: float = 7.0,
        mask_scale: int = 4,
        jitter: int = 5,
        n_draws: int = 10,
        lr: float = 0.3,
        betas: Sequence[float] = (0.9, 0.99),
        max_iter: int = 300,
        tol: float = 0.01,
        patience: int = 10,
        seed: int = 0,
        max_batch: int | None = None,
        truncate: float = 3.0,
    ) -> None:
        super().__init__(model)
        self.sigma_blur = _number("sigma_blur", sigma_blur, 0.0)
        self.sigma_mask = _number("sigma_mask", sigma_mask, 0.0)
        self.l1_coeff = _number("l1_coeff", l1_coeff, 0.0)
        self.tv_coeff = _number("tv_coeff", tv_coeff, 0.0)
        self.tv_beta = _number("tv_beta", tv_beta, 1.0)
        self.mask_scale = _integer("mask_scale", mask_scale, 1)
        self.jitter = _integer("jitter", jitter, 0)
        self.n_draws = _integer("n_draws", n_draws, 1)
        self.lr = _number("lr", lr, 0.0, low_ok=False)
        self.betas = _betas(betas)
        self.max_iter = _integer("max_iter", max_iter, 1)
        self.tol = _number("tol", tol, 0.0)
        self.patience = _integer("patience", patience, 1)
        self.seed = _integer("seed", seed, 0)
        self.max_batch = None if max_batch is None else _integer("max_batch", max_batch, 1)
        self.truncate = _number("truncate", truncate, 0.0, low_ok=False)

    # -- pieces shared with the sequential reference --------------------------------------
    def _low_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(math.ceil(n / self.mask_scale) for n in shape)

    def _offsets(self, x: torch.Tensor) -> list:
        """Crop offsets in ``0..2 jitter`` per iteration, draw and axis (one seed for all)."""
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        size = (self.max_iter, self.n_draws, x.dim() - 2)
        draws = torch.randint(0, 2 * self.jitter + 1, size, generator=gen, device=x.device)
        return draws.tolist()

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [self.jitter] * (2 * (x.dim() - 2)))

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
        low = self._low_shape(shape)
        padded = self._pad(x)
        blurred = gaussian_blur3d(padded, self.sigma_blur, self.truncate)  # once per subject
        mats = mask_matrices(
            low, shape, self.sigma_mask, self.truncate, dtype=x.dtype, device=x.device
        )
        params = [
            torch.ones((1, *low), dtype=x.dtype, device=x.device, requires_grad=True)
            for _ in range(n)
        ]
        stop = _Convergence(n, self.tol, self.patience)
        data = (blurred, padded - blurred, targets)
        with torch.enable_grad():
            final = self._solve(params, mats, data, self._offsets(x), stop)
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
        shape = tuple(n - 2 * self.jitter for n in diff.shape[2:])
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
        low = self._low_shape(shape)
        offsets = self._offsets(x)
        maps, history = [], torch.full((self.max_iter, n), math.nan)
        for i in range(n):
            m = torch.ones((1, 1, *low), dtype=x.dtype, device=x.device, requires_grad=True)
            opt = torch.optim.Adam([m], lr=self.lr, betas=self.betas)
            for it in range(self.max_iter):
                with torch.enable_grad():
                    history[it, i] = self._iteration(x[i : i + 1], targets[i], m, offsets[it])
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    m.clamp_(0, 1)
            with torch.no_grad():
                maps.append(1 - self._upsample(m, shape)[0, 0])
        self.n_iter_, self.history_ = torch.full((n,), self.max_iter), history
        return torch.stack(maps)

    def _upsample(self, m: torch.Tensor, shape) -> torch.Tensor:
        up = F.interpolate(m, size=shape, mode="trilinear", align_corners=False)
        return gaussian_blur3d(up, self.sigma_mask, self.truncate)

    def _iteration(self, x, target, m, offsets) -> float:
        shape = tuple(x.shape[2:])
        mask = self._upsample(m, shape)
        reg = self._regulariser(m).sum()
        value = float(reg.detach())
        reg.backward()
        for offset in offsets:
            padded = self._pad(x)
            blurred = gaussian_blur3d(padded, self.sigma_blur, self.truncate)
            phi = blur_perturbation(
                _crop(padded, offset, shape), mask, _crop(blurred, offset, shape)
            )
            f = _class_score(self._forward(phi), target.view(1)).sum() / len(offsets)
            f.backward(retain_graph=True)
            value += float(f.detach())
        return value
