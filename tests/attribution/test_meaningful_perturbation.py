"""Meaningful Perturbations: the deletion operator, known answers, and the fast solver
against the faithful sequential reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from brainmaps.attribution._filters import apply_separable, gaussian_blur3d
from brainmaps.attribution.base import check_options, create_method, get_method
from brainmaps.attribution.meaningful_perturbation import (
    KAN2020_OPTIONS,
    MeaningfulPerturbation,
    _SequentialReference,
    blur_perturbation,
    mask_matrices,
)
from brainmaps.data import mni_grid
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model

GRID = (22, 24, 22)
CUBE = (slice(4, 10), slice(12, 18), slice(8, 14))  # the only region the toy model reads


class CubeReader(nn.Module):
    """A fixed network whose output depends only on the mean intensity of ``CUBE``.

    Two classes: ``logit_1 - logit_0 = gain (mean - 0.75)``, so the class-1 probability is
    0.92 on the bright cube and about 0.1 once the cube is blurred; with
    ``n_outputs=1`` the output is ``gain * mean`` (a regression model).
    """

    def __init__(self, n_outputs: int = 2, gain: float = 8.0) -> None:
        super().__init__()
        weight = torch.zeros(1, 1, *GRID)
        weight[(0, 0, *CUBE)] = 1.0
        self.register_buffer("weight", weight / weight.sum())
        self.fc = nn.Linear(1, n_outputs)
        with torch.no_grad():
            if n_outputs == 2:
                self.fc.weight.copy_(torch.tensor([[-gain / 2], [gain / 2]]))
                self.fc.bias.copy_(torch.tensor([0.375 * gain, -0.375 * gain]))
            else:
                self.fc.weight.fill_(gain)
                self.fc.bias.zero_()

    def forward(self, x):
        return self.fc((x * self.weight).sum(dim=(1, 2, 3, 4)).unsqueeze(1))


def _bright_cubes(n: int = 1) -> torch.Tensor:
    """Volumes with a bright block over ``CUBE`` (plus one elsewhere) on a dark background."""
    gen = torch.Generator().manual_seed(4)
    x = 0.1 * torch.rand((n, 1, *GRID), generator=gen)
    x[(slice(None), 0, *CUBE)] += 1.0
    x[:, 0, 12:18, 2:8, 4:10] += 1.0  # a decoy the model ignores
    return x


def _cube_mask() -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    mask[CUBE] = True
    return mask


#: Small, fast settings for the toy problems, on 1 mm voxels: 3 and 1 voxel sigmas, a
#: mask of 2-voxel cells (11x12x11), a jitter of 1 voxel.
TOY = {
    "voxel_size": 1.0,
    "sigma_blur_mm": 3.0,
    "sigma_mask_mm": 1.0,
    "mask_voxel_mm": 2.0,
    "jitter_mm": 1.0,
    "n_draws": 3,
    "l1_coeff": 0.5,
    "tv_coeff": 0.1,
    "max_iter": 60,
}


def test_registered_under_its_cli_name():
    assert get_method("meaningful_perturbation") is MeaningfulPerturbation


def test_deletion_operator_keeps_x_at_one_and_blurs_at_zero():
    x = torch.rand(2, 1, 8, 9, 10)
    blurred = gaussian_blur3d(x, 2.0)
    torch.testing.assert_close(blur_perturbation(x, torch.ones(2, 1, 8, 9, 10), blurred), x)
    torch.testing.assert_close(blur_perturbation(x, torch.zeros(1, 1, 8, 9, 10), blurred), blurred)
    half = blur_perturbation(x, torch.full((1,), 0.5), blurred)
    torch.testing.assert_close(half, (x + blurred) / 2)


def test_mask_matrices_equal_trilinear_upsampling_then_gaussian_smoothing():
    m = torch.rand(2, 1, 6, 7, 5, dtype=torch.float64)
    shape = (22, 26, 19)
    mats = mask_matrices(m.shape[2:], shape, 2.5, dtype=torch.float64)
    expected = F.interpolate(m, size=shape, mode="trilinear", align_corners=False)
    expected = gaussian_blur3d(expected, 2.5)
    torch.testing.assert_close(apply_separable(m, mats), expected)


@pytest.mark.parametrize("n_outputs", [2, 1])
def test_deleted_region_is_the_cube_the_model_reads(n_outputs):
    model, x = CubeReader(n_outputs), _bright_cubes()
    maps = MeaningfulPerturbation(model, **TOY).attribute(x, target=1 if n_outputs == 2 else 0)
    saliency, cube = maps[0].numpy(), _cube_mask()
    assert roc_auc_score(cube.ravel(), saliency.ravel()) > 0.97
    assert cube[np.unravel_index(saliency.argmax(), GRID)]
    assert saliency[cube].mean() > 0.5  # most of the cube is deleted ...
    assert saliency[12:18, 2:8, 4:10].max() < 0.05  # ... and none of the decoy


def test_stops_before_max_iter_once_the_map_has_converged():
    model, x = CubeReader(), _bright_cubes()
    method = MeaningfulPerturbation(model, **(TOY | {"jitter_mm": 0, "max_iter": 300}))
    maps = method.attribute(x, target=1)
    assert 5 <= int(method.n_iter_[0]) < 100
    assert method.history_.shape == (int(method.n_iter_[0]) + 1, 1)  # + the final check
    # the objective went down from "nothing deleted" (the class probability)
    assert method.history_[-1, 0] < 0.5 * method.history_[0, 0]
    # running on to max_iter does not change the map much more than tol per step
    longer = MeaningfulPerturbation(model, **(TOY | {"jitter_mm": 0, "tol": 0.0, "max_iter": 150}))
    assert (longer.attribute(x, target=1) - maps).abs().max() < 0.1


def _pair(model, x, target, **options):
    fast = MeaningfulPerturbation(model, **options)
    ref = _SequentialReference(model, **options)
    return fast, fast.attribute(x, target=target), ref, ref.attribute(x, target=target)


def test_fast_objective_equals_the_sequential_reference_for_the_same_draws():
    x = _bright_cubes(2)
    options = TOY | {"max_iter": 1, "jitter_mm": 2.0, "n_draws": 4}
    fast, fast_maps, ref, ref_maps = _pair(CubeReader(), x, 1, **options)
    torch.testing.assert_close(fast.history_, ref.history_)  # same objective value ...
    torch.testing.assert_close(fast_maps, ref_maps)  # ... and same gradient: same step
    assert fast_maps.abs().max() > 0.1  # the step did change the mask
    # several iterations, a real network with BatchNorm, one volume per pass (the paper's
    # 10-voxel sigmas and mask factor 4 on 1 mm voxels)
    torch.manual_seed(0)
    net = create_model("xin2019", input_shape=GRID, channels=[2, 4, 4]).eval()
    paper = {"sigma_blur_mm": 10.0, "sigma_mask_mm": 10.0, "mask_voxel_mm": 4.0}
    options = paper | {"max_iter": 3, "tol": 0.0, "n_draws": 3, "jitter_mm": 2.0}
    options |= {"max_batch": 1, "voxel_size": 1.0}
    fast, fast_maps, ref, ref_maps = _pair(net, torch.randn(2, 1, *GRID), 0, **options)
    torch.testing.assert_close(fast.history_, ref.history_)
    torch.testing.assert_close(fast_maps, ref_maps, rtol=1e-4, atol=1e-5)
    assert fast.history_.shape == ref.history_.shape == (3, 2)


def test_fast_solver_equals_the_reference_on_an_anisotropic_grid():
    """Per-axis sigmas, jitter and mask cells: the two solvers still agree."""
    x = _bright_cubes(2)
    options = TOY | {"voxel_size": (1.0, 1.5, 3.0), "jitter_mm": 3.0, "max_iter": 2}
    options |= {"tol": 0.0, "n_draws": 3}
    fast, fast_maps, ref, ref_maps = _pair(CubeReader(), x, 1, **options)
    grid = fast.in_voxels(GRID)
    assert grid.jitter == (3, 2, 1) and grid.mask_shape == (11, 18, 22)
    torch.testing.assert_close(fast.history_, ref.history_)
    torch.testing.assert_close(fast_maps, ref_maps, rtol=1e-4, atol=1e-5)
    assert fast_maps.abs().max() > 0.1


def test_chunking_and_batching_do_not_change_the_maps():
    model, x = CubeReader(), _bright_cubes(2)
    x[1] = x[1].flip(-1)  # two different subjects
    options = TOY | {"max_iter": 15}
    together = MeaningfulPerturbation(model, **options).attribute(x, target=1)
    chunked = MeaningfulPerturbation(model, max_batch=2, **options).attribute(x, target=1)
    alone = MeaningfulPerturbation(model, **options).attribute(x[1:], target=1)
    torch.testing.assert_close(chunked, together)
    torch.testing.assert_close(alone, together[1:])


def test_deterministic_for_a_seed():
    model, x = CubeReader(), _bright_cubes()
    options = TOY | {"max_iter": 10, "tol": 0.0, "jitter_mm": 2.0}
    first = MeaningfulPerturbation(model, seed=3, **options)
    again = MeaningfulPerturbation(model, seed=3, **options)
    other = MeaningfulPerturbation(model, seed=4, **options)
    torch.testing.assert_close(first.attribute(x, 1), again.attribute(x, 1), rtol=0, atol=0)
    other.attribute(x, 1)
    assert not torch.allclose(first.history_, other.history_)


def test_model_and_grad_mode_are_untouched():
    model, x = CubeReader(), _bright_cubes()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # callers may run inside no_grad; the method still optimises
        maps = MeaningfulPerturbation(model, **(TOY | {"max_iter": 5})).attribute(x, 1)
    assert maps.abs().max() > 0.1
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("mask_voxel_mm", 0),
        ("jitter_mm", -1),
        ("n_draws", 2.5),
        ("lr", 0.0),
        ("sigma_blur_mm", -1.0),
        ("sigma_mask_mm", float("inf")),
        ("voxel_size", (1.0, 2.0)),
        ("voxel_size", 0),
        ("tv_beta", 0.5),
        ("betas", (0.9, 1.0)),
        ("betas", "fast"),
        ("max_batch", 0),
        ("tol", float("nan")),
        ("patience", 0),
    ],
)
def test_invalid_options_are_named(option, value):
    with pytest.raises(ConfigError, match=f"option {option.split('[')[0]}"):
        MeaningfulPerturbation(CubeReader(), **{option: value})


def test_numpy_scalars_from_configs_are_accepted():
    method = MeaningfulPerturbation(
        CubeReader(), jitter_mm=np.int64(2), n_draws=np.int64(3), lr=np.float32(0.1)
    )
    assert method.jitter_mm == 2.0 and type(method.jitter_mm) is float
    assert method.n_draws == 3 and isinstance(method.n_draws, int)
    assert method.lr == pytest.approx(0.1)


# -- options in millimetres -------------------------------------------------------------


def test_mm_options_convert_exactly_on_a_known_grid():
    model = CubeReader()
    cubic = MeaningfulPerturbation(model, voxel_size=3.0, sigma_mask_mm=6.0, sigma_blur_mm=3.0)
    assert cubic.in_voxels(GRID).sigma_mask == (2.0, 2.0, 2.0)  # 2 voxel sizes: 2 voxels
    assert cubic.in_voxels(GRID).sigma_blur == (1.0, 1.0, 1.0)
    options = {"sigma_blur_mm": 10.0, "jitter_mm": 5.0, "mask_voxel_mm": 8.0}
    grid = MeaningfulPerturbation(model, voxel_size=(2.0, 2.5, 4.0), **options).in_voxels(
        (40, 40, 40)
    )
    assert grid.voxel_size == (2.0, 2.5, 4.0)
    assert grid.sigma_blur == (5.0, 4.0, 2.5)
    assert grid.jitter == (3, 2, 1)  # 2.5 voxels round half up, 1.25 down
    assert grid.mask_shape == (10, 13, 20)  # ceil(80 / 8), ceil(100 / 8), ceil(160 / 8)
    # by default the voxels are those of the MNI grid of the input's shape
    shape = (36, 44, 36)
    sizes = tuple(mni_grid(shape).voxel_size)
    grid = MeaningfulPerturbation(model, sigma_mask_mm=10.0).in_voxels(shape)
    assert grid.voxel_size == pytest.approx(sizes)
    assert grid.sigma_mask == pytest.approx(tuple(10.0 / v for v in sizes))


def test_zero_jitter_disables_it_and_a_small_one_keeps_one_voxel():
    shape = (36, 44, 36)  # about 5 mm voxels
    assert MeaningfulPerturbation(CubeReader(), jitter_mm=0).in_voxels(shape).jitter == (0, 0, 0)
    small = MeaningfulPerturbation(CubeReader(), jitter_mm=0.5).in_voxels(shape)
    assert small.jitter == (1, 1, 1)
    fine = MeaningfulPerturbation(CubeReader(), voxel_size=1.0, mask_voxel_mm=0.25)
    assert fine.in_voxels(GRID).mask_shape == GRID  # never finer than the input


def test_kan2020_options_are_the_papers_voxel_values_at_58x70x58():
    """Kan et al.: sigmas of 10 voxels, jitter 5 voxels, mask factor 4 at 58x70x58."""
    shape = (58, 70, 58)
    grid = MeaningfulPerturbation(CubeReader(), **KAN2020_OPTIONS).in_voxels(shape)
    for sigmas in (grid.sigma_blur, grid.sigma_mask):
        assert sigmas == pytest.approx((10.0, 10.0, 10.0), rel=0.006)
        # the truncated kernels keep the paper's length: radius int(3 * 10 + 0.5) = 30
        assert [int(3.0 * s + 0.5) for s in sigmas] == [30, 30, 30]
    assert grid.jitter == (5, 5, 5)
    assert grid.mask_shape == tuple(math.ceil(n / 4) for n in shape) == (15, 18, 15)


def test_defaults_keep_the_papers_blur_and_cells_and_smooth_by_5_mm():
    shape = (58, 70, 58)
    default = MeaningfulPerturbation(CubeReader()).in_voxels(shape)
    paper = MeaningfulPerturbation(CubeReader(), **KAN2020_OPTIONS).in_voxels(shape)
    assert default.sigma_blur == paper.sigma_blur and default.mask_shape == paper.mask_shape
    assert default.sigma_mask == pytest.approx(tuple(5.0 / v for v in default.voxel_size))
    assert default.jitter == (2, 2, 2)  # 5 mm of ~3.1 mm voxels, rounded


def _fwhm_mm(profile: np.ndarray, voxel: float) -> float:
    """Full width at half maximum of a peaked 1D profile, linearly interpolated, in mm."""
    peak = int(profile.argmax())
    half = profile[peak] / 2
    widths = []
    for step in (1, -1):
        i = peak
        while profile[i + step] > half:
            i += step
        a, b = profile[i], profile[i + step]
        widths.append(abs(i - peak) + (a - half) / (a - b))
    return sum(widths) * voxel


def test_the_same_mm_options_mean_the_same_mm_at_two_grids():
    """A point blurred by sigma_blur_mm = 12 at 36x44x36 and at 72x88x72 (5 and 2.5 mm
    voxels) has the same width in mm: 2.355 x 12 = 28.3 mm, whatever the grid."""
    method = MeaningfulPerturbation(CubeReader(), sigma_blur_mm=12.0, jitter_mm=10.0)
    widths, jitters, masks = [], [], []
    for shape in ((36, 44, 36), (72, 88, 72)):
        grid = method.in_voxels(shape)
        x = torch.zeros((1, 1, *shape), dtype=torch.float64)
        centre = tuple(n // 2 for n in shape)
        x[(0, 0, *centre)] = 1.0
        blurred = gaussian_blur3d(x, grid.sigma_blur)[0, 0].numpy()
        profiles = [
            blurred[:, centre[1], centre[2]],
            blurred[centre[0], :, centre[2]],
            blurred[centre[0], centre[1], :],
        ]
        widths.append([_fwhm_mm(p, v) for p, v in zip(profiles, grid.voxel_size, strict=True)])
        for j, v in zip(grid.jitter, grid.voxel_size, strict=True):
            jitters.append(abs(j * v - 10.0) / v)  # off by this many voxels
        masks.append(grid.mask_shape)
    expected = 2 * math.sqrt(2 * math.log(2)) * 12.0
    np.testing.assert_allclose(widths[0], widths[1], rtol=0.03)
    np.testing.assert_allclose(widths, [[expected] * 3] * 2, rtol=0.04)
    assert max(jitters) <= 0.5  # 10 mm to the nearest voxel on every axis of both grids
    assert masks[0] == masks[1] == (15, 18, 15)  # the mask's cells are 12.5 mm at both


def test_the_former_voxel_options_are_refused_with_their_value_in_mm():
    model = CubeReader()
    with pytest.raises(
        ConfigError,
        match=r"meaningful_perturbation option sigma_mask is now sigma_mask_mm \(mm\): 10 "
        r"voxels at this 36x44x36 grid = 50.6 x 49.5 x 50.6 mm; give one value in mm, e.g. "
        r"sigma_mask_mm=50.6",
    ):
        check_options("meaningful_perturbation", {"sigma_mask": 10}, shape=(36, 44, 36))
    with pytest.raises(
        ConfigError,
        match=r"sigma_blur is now sigma_blur_mm \(mm\): 10 voxels at the paper's "
        r"58x70x58 grid = 31.4 x 31.1 x 31.4 mm",
    ):
        create_method("meaningful_perturbation", model, sigma_blur=10.0)
    with pytest.raises(
        ConfigError, match=r"jitter is now jitter_mm \(mm\): 1 voxel of 2.0 mm = 2.0 mm"
    ):
        MeaningfulPerturbation(model, jitter=1, voxel_size=2.0)
    with pytest.raises(ConfigError, match=r"mask_scale is now mask_voxel_mm \(mm\): 4 voxels"):
        MeaningfulPerturbation(model, mask_scale=4)
    with pytest.raises(ConfigError, match="unknown option"):
        MeaningfulPerturbation(model, sigma=3.0)
