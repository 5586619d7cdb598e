"""Separable 3D Gaussian filtering of torch tensors: a true Gaussian, not a box filter.

The papers' code blurred with a box (uniform) filter and called it Gaussian. Here the
kernel is the sampled Gaussian ``exp(-k^2 / (2 sigma^2))`` for ``|k| <= radius``,
``radius = int(truncate * sigma + 0.5)`` (scipy.ndimage's rule), normalised to sum 1,
and applied axis by axis (separably). Each 1D pass is one ``(n, n)`` banded matrix
(the kernel with the boundary extension folded in) multiplied along the axis with
:func:`torch.matmul`: the same sums as a ``(k, 1, 1)`` ``conv3d`` after padding, but on
the CPU 4-40x faster for these kernel lengths (PyTorch's single-channel conv3d is slow:
82 ms against 2 ms for sigma = 10 voxels on a 68x80x68 volume, one thread), and the
extension may be longer than the axis. With the same
``truncate`` and ``mode`` the result equals ``scipy.ndimage.gaussian_filter`` to
floating-point precision (tested), on the CPU or the GPU, and it is differentiable.

Boundary modes (named as in scipy.ndimage; ``d c b a | a b c d`` shows how the signal
``a b c d`` is extended past its left edge):

``"reflect"`` (default)
    ``d c b a | a b c d``: half-voxel symmetric extension, the edge voxel repeated
    (PyTorch's ``F.pad(mode="reflect")`` does *not* repeat it; that is ``"mirror"``).
    It preserves the sum of the signal exactly, for kernels of any length.
``"mirror"``
    ``d c b | a b c d``: whole-voxel symmetric extension.
``"replicate"``
    ``a a a a | a b c d``: the edge value repeated (scipy's ``"nearest"``).
``"zeros"``
    ``0 0 0 0 | a b c d`` (scipy's ``"constant"`` with ``cval=0``).

Extensions longer than the axis are handled (the signal is reflected again), so a
kernel may be wider than the volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brainmaps.exceptions import ConfigError, ShapeError

__all__ = [
    "BOUNDARY_MODES",
    "apply_separable",
    "gaussian_blur3d",
    "gaussian_kernel1d",
    "gaussian_matrix",
    "linear_resize_matrix",
]

#: Boundary modes accepted by :func:`gaussian_blur3d`.
BOUNDARY_MODES = ("reflect", "mirror", "replicate", "zeros")


def gaussian_kernel1d(
    sigma: float,
    truncate: float = 3.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sampled, normalised 1D Gaussian kernel.

    Parameters
    ----------
    sigma : float
        Standard deviation in voxels (> 0).
    truncate : float
        The kernel stops at ``radius = int(truncate * sigma + 0.5)`` voxels from its
        centre (as in scipy.ndimage).
    dtype, device
        Of the returned kernel (weights are computed in float64, then cast).

    Returns
    -------
    torch.Tensor
        ``(2 * radius + 1,)`` weights summing to 1.
    """
    radius = int(truncate * float(sigma) + 0.5)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (k / float(sigma)) ** 2)
    return (weights / weights.sum()).to(dtype=dtype, device=device)


def _extension_index(n: int, radius: int, mode: str, device) -> torch.Tensor:
    """Source index of every position of an axis of length ``n`` extended by ``radius``."""
    i = torch.arange(-radius, n + radius, device=device)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "mirror" and n > 1:
        j = i.remainder(2 * n - 2)
        return torch.where(j >= n, 2 * n - 2 - j, j)
    if mode == "mirror":  # a single voxel mirrors onto itself
        return torch.zeros_like(i)
    j = i.remainder(2 * n)  # reflect
    return torch.where(j >= n, 2 * n - 1 - j, j)


def _band_matrix(n: int, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """``(n, n)`` matrix of the correlation with ``kernel``, boundary extension included."""
    radius = (kernel.numel() - 1) // 2
    rows = torch.arange(n, device=kernel.device)[:, None]
    taps = torch.arange(kernel.numel(), device=kernel.device)[None, :]
    weights = kernel.expand(n, -1)
    if mode == "zeros":
        src = rows + taps - radius
        weights = torch.where((src >= 0) & (src < n), weights, torch.zeros_like(weights))
        src = src.clamp(0, n - 1)
    else:
        src = _extension_index(n, radius, mode, kernel.device)[rows + taps]
    return torch.zeros(n, n, dtype=kernel.dtype, device=kernel.device).scatter_add_(1, src, weights)


def _sigmas(sigma: float | Sequence[float]) -> tuple[float, float, float]:
    values = tuple(sigma) if isinstance(sigma, Sequence) else (sigma, sigma, sigma)
    if len(values) != 3 or not all(
        isinstance(s, int | float) and not isinstance(s, bool) and s >= 0 for s in values
    ):
        raise ConfigError(
            f"sigma must be a non-negative number of voxels or 3 of them (one per axis), "
            f"got {sigma!r}."
        )
    return tuple(float(s) for s in values)


def _check_mode(mode: str, truncate: float) -> None:
    if mode not in BOUNDARY_MODES:
        raise ConfigError(
            f"mode must be one of {', '.join(BOUNDARY_MODES)}, got {mode!r}; 'reflect' "
            "(scipy.ndimage's default) preserves the sum of the volume."
        )
    if isinstance(truncate, bool) or not isinstance(truncate, int | float) or truncate <= 0:
        raise ConfigError(f"truncate must be a positive number of sigmas, got {truncate!r}.")


def gaussian_blur3d(
    x: torch.Tensor,
    sigma: float | Sequence[float],
    truncate: float = 3.0,
    mode: str = "reflect",
) -> torch.Tensor:
    """Blur every channel of a batch of volumes with a 3D Gaussian (separable).

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, X, Y, Z)`` floating-point volumes.
    sigma : float or sequence of 3 float
        Standard deviation in voxels, one for all axes or one per axis; 0 leaves an
        axis unfiltered. To blur by ``s`` mm on a grid of ``v`` mm voxels use
        ``sigma = s / v``.
    truncate : float
        Kernel radius in sigmas: ``radius = int(truncate * sigma + 0.5)`` voxels (3
        keeps 99.7% of the Gaussian's mass; the kernel is renormalised to sum 1).
    mode : {"reflect", "mirror", "replicate", "zeros"}
        How the volume is extended past its faces (see the module notes);
        ``"reflect"`` preserves the sum of each volume.

    Returns
    -------
    torch.Tensor
        Blurred volumes, same shape, dtype and device as ``x``; differentiable.

    Raises
    ------
    ShapeError
        If ``x`` is not a 5-D floating-point tensor.
    ConfigError
        On a negative sigma, a non-positive ``truncate`` or an unknown ``mode``.

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1, 1, 9, 9, 9)
    >>> x[0, 0, 4, 4, 4] = 1.0
    >>> y = gaussian_blur3d(x, sigma=1.0)
    >>> round(float(y.sum()), 6)
    1.0
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5 or not x.is_floating_point():
        found = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(
            f"gaussian_blur3d expects a floating-point tensor of shape (N, C, X, Y, Z), got "
            f"{found}; add batch/channel axes with x[None, None] and convert with .float()."
        )
    sigmas = _sigmas(sigma)
    _check_mode(mode, truncate)
    matrices = [
        gaussian_matrix(n, s, truncate, mode, dtype=x.dtype, device=x.device) if s > 0 else None
        for n, s in zip(x.shape[2:], sigmas, strict=True)
    ]
    return apply_separable(x, matrices)


def gaussian_matrix(
    n: int,
    sigma: float,
    truncate: float = 3.0,
    mode: str = "reflect",
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The 1D Gaussian filter of an axis of length ``n`` as an ``(n, n)`` matrix.

    Row ``i`` holds the weights that output voxel ``i`` gives to each input voxel,
    boundary handling included, so ``apply_separable(x, [A, A, A])`` with
    ``A = gaussian_matrix(n, s)`` equals ``gaussian_blur3d(x, s)`` on a cube of edge
    ``n``. Matrices of consecutive linear steps along an axis (resampling, then
    blurring) can be multiplied into one.

    Parameters
    ----------
    n : int
        Axis length.
    sigma, truncate, mode
        As in :func:`gaussian_blur3d`; ``sigma == 0`` gives the identity.
    dtype, device
        Of the returned matrix.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` matrix.
    """
    (s, _, _) = _sigmas(sigma)
    _check_mode(mode, truncate)
    if s == 0:
        return torch.eye(n, dtype=dtype, device=device)
    kernel = gaussian_kernel1d(s, truncate, dtype=torch.float64, device=device)
    return _band_matrix(n, kernel, mode).to(dtype)


def linear_resize_matrix(
    n_in: int,
    n_out: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Linear interpolation from ``n_in`` to ``n_out`` samples as an ``(n_out, n_in)`` matrix.

    The weights of ``F.interpolate(mode="linear", align_corners=False)``, obtained by
    interpolating the identity, so trilinear resizing of a volume equals
    :func:`apply_separable` with one such matrix per axis.
    """
    eye = torch.eye(n_in, dtype=torch.float64, device=device)[:, None]
    out = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)
    return out[:, 0].t().contiguous().to(dtype)


def apply_separable(x: torch.Tensor, matrices: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Apply one matrix per spatial axis to the last ``len(matrices)`` axes of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., n_1, ..., n_d)``.
    matrices : sequence of torch.Tensor or None
        ``A_k`` of shape ``(m_k, n_k)``, applied along axis ``k`` of the last ``d``;
        ``None`` leaves that axis as it is.

    Returns
    -------
    torch.Tensor
        ``(..., m_1, ..., m_d)``: ``y = x ×_1 A_1 ×_2 A_2 ... ×_d A_d``.
    """
    first = x.dim() - len(matrices)
    for k, matrix in enumerate(matrices):
        if matrix is None:
            continue
        axis = first + k
        x = torch.matmul(x.movedim(axis, -1), matrix.t()).movedim(-1, axis)
    return x
