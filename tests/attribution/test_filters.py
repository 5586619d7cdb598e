"""The 3D Gaussian blur is a true, isotropic, sum-preserving Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from brainmaps.attribution._filters import (
    apply_separable,
    gaussian_blur3d,
    gaussian_kernel1d,
    gaussian_matrix,
)
from brainmaps.exceptions import ConfigError, ShapeError

SCIPY_MODE = {"reflect": "reflect", "mirror": "mirror", "replicate": "nearest", "zeros": "constant"}


def _impulse(n: int = 25, dtype=torch.float64) -> torch.Tensor:
    x = torch.zeros(1, 1, n, n, n, dtype=dtype)
    x[0, 0, n // 2, n // 2, n // 2] = 1.0
    return x


def test_kernel_is_a_normalised_sampled_gaussian():
    kernel = gaussian_kernel1d(2.0, truncate=3.0, dtype=torch.float64)
    assert kernel.numel() == 2 * 6 + 1  # radius int(3 * 2 + 0.5) = 6, as scipy.ndimage
    k = np.arange(-6, 7)
    expected = np.exp(-(k**2) / 8.0)
    np.testing.assert_allclose(kernel.numpy(), expected / expected.sum(), rtol=1e-12)


def test_impulse_response_is_the_analytic_isotropic_gaussian():
    sigma, n = 2.0, 25
    out = gaussian_blur3d(_impulse(n), sigma, truncate=4.0)[0, 0].numpy()
    c = n // 2
    grid = np.indices((n, n, n)) - c
    r2 = (grid**2).sum(axis=0)
    inside = np.abs(grid).max(axis=0) <= 8  # the truncated kernel's cube
    analytic = np.exp(-r2 / (2 * sigma**2)) * inside
    np.testing.assert_allclose(out, analytic / analytic.sum(), rtol=1e-10, atol=1e-15)
    # isotropic: equal values at equal distances along different directions
    assert out[c + 5, c, c] == pytest.approx(out[c, c + 5, c]) == pytest.approx(out[c, c, c + 5])
    assert out[c + 3, c + 4, c] == pytest.approx(out[c + 5, c, c], rel=1e-12)  # both at r = 5
    # variance of the response along each axis is sigma^2 (a box filter of the same
    # width would give a different, flat profile)
    weights = out.sum(axis=(1, 2))
    var = (weights * (np.arange(n) - c) ** 2).sum()
    assert var == pytest.approx(sigma**2, rel=1e-3)


@pytest.mark.parametrize("mode", sorted(SCIPY_MODE))
@pytest.mark.parametrize("sigma", [0.7, 2.5, (1.0, 0.0, 3.0), 12.0])
def test_equals_scipy_gaussian_filter(mode, sigma):
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((9, 14, 11))
    expected = ndimage.gaussian_filter(volume, sigma, truncate=3.0, mode=SCIPY_MODE[mode])
    got = gaussian_blur3d(torch.from_numpy(volume)[None, None], sigma, mode=mode)[0, 0]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("sigma", [1.5, 30.0])
def test_reflect_preserves_sums_even_with_kernels_wider_than_the_volume(sigma):
    x = torch.rand(2, 3, 7, 10, 5, dtype=torch.float64)
    out = gaussian_blur3d(x, sigma)
    torch.testing.assert_close(out.sum(dim=(2, 3, 4)), x.sum(dim=(2, 3, 4)))


def test_channels_and_batch_are_blurred_independently_with_float32():
    x = torch.rand(2, 3, 8, 9, 10)
    out = gaussian_blur3d(x, 1.2)
    assert out.dtype == torch.float32 and out.shape == x.shape
    single = gaussian_blur3d(x[1:2, 2:3], 1.2)
    torch.testing.assert_close(out[1:2, 2:3], single)


def test_zero_sigma_is_the_identity_and_one_axis_can_be_left_alone():
    x = torch.rand(1, 1, 6, 7, 8, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur3d(x, 0.0), x)
    only_y = gaussian_blur3d(x, (0.0, 2.0, 0.0))
    expected = ndimage.gaussian_filter1d(x[0, 0].numpy(), 2.0, axis=1, truncate=3.0)
    np.testing.assert_allclose(only_y[0, 0].numpy(), expected, atol=1e-12)


def test_differentiable():
    x = torch.rand(1, 1, 4, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: gaussian_blur3d(v, 1.3, mode="replicate"), (x,))


def test_gaussian_matrix_and_apply_separable():
    a = gaussian_matrix(11, 1.7, dtype=torch.float64)
    torch.testing.assert_close(a.sum(dim=0), torch.ones(11, dtype=torch.float64))  # reflect
    x = torch.rand(2, 1, 11, 11, 11, dtype=torch.float64)
    torch.testing.assert_close(apply_separable(x, [a, a, a]), gaussian_blur3d(x, 1.7))
    torch.testing.assert_close(gaussian_matrix(5, 0.0), torch.eye(5))
    resize = torch.rand(4, 11, dtype=torch.float64)
    out = apply_separable(x, [None, resize, None])
    assert out.shape == (2, 1, 11, 4, 11)
    torch.testing.assert_close(out, torch.einsum("ncxyz,by->ncxbz", x, resize))


def test_errors_name_the_problem():
    with pytest.raises(ShapeError, match=r"\(N, C, X, Y, Z\)"):
        gaussian_blur3d(torch.zeros(4, 4, 4), 1.0)
    with pytest.raises(ShapeError, match="floating-point"):
        gaussian_blur3d(torch.zeros(1, 1, 4, 4, 4, dtype=torch.long), 1.0)
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_blur3d(torch.zeros(1, 1, 4, 4, 4), -1.0)
    with pytest.raises(ConfigError, match="sigma"):
        gaussian_blur3d(torch.zeros(1, 1, 4, 4, 4), (1.0, 2.0))
    with pytest.raises(ConfigError, match="mode"):
        gaussian_blur3d(torch.zeros(1, 1, 4, 4, 4), 1.0, mode="wrap")
    with pytest.raises(ConfigError, match="truncate"):
        gaussian_blur3d(torch.zeros(1, 1, 4, 4, 4), 1.0, truncate=0)
