"""Occlusion: identical to a literal loop and to Captum, fast paths included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution._incremental import OcclusionEngine
from brainmaps.attribution.base import get_method
from brainmaps.attribution.occlusion import (
    Occlusion,
    fill_values,
    occlusion_accuracy_map,
    window_grid,
)
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import create_model

# -- tiny models -----------------------------------------------------------------------


def _randomise(model: nn.Module, seed: int = 0, head_scale: float = 20.0) -> nn.Module:
    """Non-trivial BatchNorm statistics and a sharp head so probabilities react."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    linears[-1].weight.data.mul_(head_scale)
    return model.eval()


def chain_net(n_out: int = 2, shape=(13, 15, 11)) -> nn.Module:
    """Strided, padded, dilated convolutions and pools of every supported kind."""
    torch.manual_seed(1)
    body = nn.Sequential(
        nn.Conv3d(2, 3, 3, stride=2, padding=1),
        nn.BatchNorm3d(3),
        nn.LeakyReLU(0.1),
        nn.AvgPool3d(2, stride=1, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv3d(3, 4, 3, dilation=2),
        nn.MaxPool3d(3, stride=2, padding=1),  # on negative values: padding must be -inf
        nn.Flatten(),
    )
    n_features = body(torch.zeros(1, 2, *shape)).shape[1]
    return _randomise(nn.Sequential(body, nn.Dropout(0.5), nn.Linear(n_features, n_out)))


class CubeSum(nn.Module):
    """Sum of channel 0 over one fixed cube, as logits ``[s, -s]``."""

    box = (slice(3, 6), slice(4, 7), slice(2, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[(slice(None), 0, *self.box)].sum(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


class CubePresence(CubeSum):
    """Class 0 while the cube holds anything, class 1 once it is all zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[(slice(None), 0, *self.box)].sum(dim=(1, 2, 3))
        return torch.stack([s, torch.full_like(s, 1e-3)], dim=1)


class InPlaceAfterConv(nn.Module):
    """A chain broken by an in-place operation between modules (needs the fallback)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2 * 8 * 9 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h.mul_(3.0)
        return self.fc(self.flat(h))


# -- literal oracle --------------------------------------------------------------------


def naive_occlusion(model, x, window, stride, fill, target, output="probability"):
    """One occluded copy per window, one full forward each; mean drop per voxel."""
    shape = x.shape[2:]
    total, count = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)

    def score(inp):
        out = model(inp)
        return (torch.softmax(out, 1) if output == "probability" else out)[0, target]

    with torch.no_grad():
        base = score(x)
        ranges = [
            range(0, max(n - w, 0) + s, s) for n, w, s in zip(shape, window, stride, strict=True)
        ]
        for corner in itertools.product(*ranges):
            box = tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))
            occluded = x.clone()
            occluded[(0, slice(None), *box)] = fill.view(-1, 1, 1, 1)
            total[box] += float(base - score(occluded))
            count[box] += 1
    return (total / count).float()


def naive_accuracy_map(model, volumes, labels, window, stride):
    shape = volumes.shape[2:]
    total, count = np.zeros(shape), np.zeros(shape)
    with torch.no_grad():
        acc0 = (model(volumes).argmax(1).numpy() == labels).mean()
        ranges = [
            range(0, max(n - w, 0) + s, s) for n, w, s in zip(shape, window, stride, strict=True)
        ]
        for corner in itertools.product(*ranges):
            box = tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))
            occluded = volumes.clone()
            occluded[(slice(None), slice(None), *box)] = 0.0
            acc = (model(occluded).argmax(1).numpy() == labels).mean()
            total[box] += acc0 - acc
            count[box] += 1
    return total / count


def _inputs(n=2, channels=2, shape=(13, 15, 11), seed=0):
    x = torch.randn(n, channels, *shape, generator=torch.Generator().manual_seed(seed))
    x[..., :2, :, :] = 0.0  # background, so "mean" (non-zero voxels) differs from a plain mean
    return x


# -- tests -----------------------------------------------------------------------------


def test_registered_and_validates_options():
    assert get_method("occlusion") is Occlusion
    model = chain_net()
    bad = [
        {"window_mm": 0},
        {"window_mm": "big"},
        {"stride_mm": 20.0},
        {"fill": "noise"},
        {"output": "odds"},
        {"max_batch": 0},
        {"max_batch": 2.5},
        {"memory_bound_mb": -1},
        {"voxel_size": (1.0, 2.0)},
        {"voxel_size": 0},
        {"incremental": "yes"},
    ]
    for options in bad:
        with pytest.raises(ConfigError, match="occlusion option"):
            Occlusion(model, **options)


def test_window_grid_in_mm_on_the_mni_grid():
    grid = window_grid((58, 70, 58))  # 3.14 x 3.11 x 3.14 mm voxels
    assert grid.window == (6, 6, 6) and grid.stride == (3, 3, 3)
    assert grid.counts == (19, 23, 19)  # ceil((58 - 6) / 3) + 1, ceil((70 - 6) / 3) + 1
    boxes = grid.boxes()
    assert boxes.shape == (19 * 23 * 19, 3, 2)
    assert boxes[-1].tolist() == [[54, 58], [66, 70], [54, 58]]  # cut-off last windows
    small = window_grid((10, 4, 9), window_mm=5.0, stride_mm=2.0, voxel_size=1.0)
    assert small.window == (5, 4, 5) and small.counts == (4, 1, 3)
    spread = small.spread(torch.ones(12))
    assert torch.allclose(spread, torch.ones(10, 4, 9, dtype=torch.float64))


@pytest.mark.parametrize(
    ("window", "stride", "fill", "output"),
    [
        (3, 2, "zero", "probability"),  # stride does not divide the size
        (3, 3, "mean", "logit"),  # window == stride
        (4, 3, "mean", "probability"),  # window > stride
    ],
)
def test_incremental_equals_naive_loop(window, stride, fill, output):
    model = chain_net()
    x = _inputs()
    method = Occlusion(
        model, window_mm=window, stride_mm=stride, voxel_size=1.0, fill=fill,
        output=output, max_batch=37,
    )  # fmt: skip
    maps = method.attribute(x, target=[0, 1])
    for i, target in enumerate([0, 1]):
        fills = fill_values(x[i : i + 1], fill)
        if fill == "mean":
            assert torch.allclose(fills, torch.stack([c[c != 0].mean() for c in x[i]]))
        expected = naive_occlusion(
            model, x[i : i + 1], (window,) * 3, (stride,) * 3, fills, target, output
        )
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(maps[i], expected, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["xin2019", "gap_cnn"])
@pytest.mark.parametrize("fill", ["zero", "mean"])
def test_equals_captum(name, fill):
    captum = pytest.importorskip("captum.attr")
    shape = (22, 26, 22)
    torch.manual_seed(3)
    model = _randomise(create_model(name, input_shape=shape, channels=[2, 3, 4]))
    x = _inputs(n=1, channels=1, shape=shape, seed=1)
    method = Occlusion(model, window_mm=4, stride_mm=3, voxel_size=1.0, fill=fill)
    ours = method.attribute(x, target=1)[0]
    baseline = fill_values(x, fill).view(1, -1, 1, 1, 1)
    theirs = captum.Occlusion(lambda z: torch.softmax(model(z), 1)).attribute(
        x, sliding_window_shapes=(1, 4, 4, 4), strides=(1, 3, 3, 3), baselines=baseline,
        target=1, perturbations_per_eval=128,
    )[0, 0]  # fmt: skip
    assert theirs.abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=1e-4)


def test_engine_modes():
    x = torch.zeros(1, 1, 22, 26, 22)
    boxes = window_grid(x.shape[2:], 4, 2, 1.0).boxes()
    for name in ("xin2019", "gap_cnn"):
        model = create_model(name, input_shape=(22, 26, 22), channels=[2, 2, 2]).eval()
        assert OcclusionEngine(model, x, boxes).mode == "incremental"
        assert OcclusionEngine(model, x, boxes, incremental=False).mode == "full"
    small = torch.zeros(1, 1, 10, 11, 10)
    assert OcclusionEngine(InPlaceAfterConv().eval(), small, boxes[:1]).mode == "full"


def test_chain_broken_in_place_falls_back_and_is_exact():
    torch.manual_seed(0)
    model = InPlaceAfterConv().eval()
    x = torch.randn(1, 1, 10, 11, 10)
    maps = Occlusion(model, window_mm=3, stride_mm=2, voxel_size=1.0, output="logit").attribute(
        x, target=0
    )
    expected = naive_occlusion(model, x, (3,) * 3, (2,) * 3, torch.zeros(1), 0, "logit")
    torch.testing.assert_close(maps[0], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("incremental", [True, False])
def test_model_reading_one_cube(incremental):
    """Zero attribution outside the windows that overlap the cube the model reads."""
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 1, 1, bias=False)
    conv.weight.data.fill_(1.0)
    model = nn.Sequential(conv, CubeSum()).eval() if incremental else CubeSum().eval()
    x = torch.rand(1, 1, 12, 13, 11) + 0.5
    method = Occlusion(
        model, window_mm=3, stride_mm=2, voxel_size=1.0, output="logit", incremental=incremental
    )
    maps = method.attribute(x, target=0)[0]
    reach = torch.zeros(12, 13, 11, dtype=torch.bool)
    for lo, hi in ((b[:, 0], b[:, 1]) for b in window_grid((12, 13, 11), 3, 2, 1.0).boxes()):
        box = tuple(slice(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True))
        if all(
            s.start < c.stop and c.start < s.stop for s, c in zip(box, CubeSum.box, strict=True)
        ):
            reach[box] = True
    assert torch.all(maps[~reach] == 0)
    assert torch.all(maps[CubeSum.box] > 0)
    assert reach.sum() < reach.numel() // 2


def test_regression_output_is_explained_raw():
    model = chain_net(n_out=1)
    x = _inputs(n=1)
    maps = Occlusion(model, window_mm=4, stride_mm=2, voxel_size=1.0).attribute(x)
    expected = naive_occlusion(model, x, (4,) * 3, (2,) * 3, torch.zeros(2), 0, "logit")
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(maps[0], expected, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("incremental", [True, False])
def test_memory_bound_and_max_batch(incremental):
    model = chain_net()
    x = _inputs(n=1)
    bound_mb = 0.25
    seen: list[tuple[int, int]] = []  # (batch, bytes of input + output) of every module call

    def record(module, args, out):
        seen.append((out.shape[0], (args[0].numel() + out.numel()) * out.element_size()))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        method = Occlusion(
            model, window_mm=3, stride_mm=1, voxel_size=1.0, memory_bound_mb=bound_mb,
            max_batch=1000, incremental=incremental,
        )  # fmt: skip
        maps = method.attribute(x, target=1)
    finally:
        for h in handles:
            h.remove()
    batches = [b for b, _ in seen if b > 1]
    assert batches and max(batches) < 1000  # the bound, not max_batch, limited the batch
    assert max(n for b, n in seen if b > 1) <= bound_mb * 2**20
    fills = torch.zeros(2)
    expected = naive_occlusion(model, x, (3,) * 3, (1,) * 3, fills, 1)
    torch.testing.assert_close(maps[0], expected, atol=2e-6, rtol=1e-4)
    seen.clear()
    capped = Occlusion(model, window_mm=3, stride_mm=2, voxel_size=1.0, max_batch=5)
    handles = [model[-1].register_forward_hook(record)]
    try:
        capped.attribute(x, target=1)
    finally:
        handles[0].remove()
    assert max(b for b, _ in seen) == 5


def test_accuracy_map_equals_naive_loop():
    model = chain_net()
    volumes = _inputs(n=6, seed=4)
    with torch.no_grad():  # put the subjects near the decision boundary, so windows flip them
        margin = model(volumes) @ torch.tensor([-1.0, 1.0])
        model[-1].bias.data += torch.tensor([1.0, -1.0]) * margin.sort().values[2:4].mean() / 2
        labels = model(volumes).argmax(1).numpy()
    labels[:2] = 1 - labels[:2]  # some errors, so accuracy can also rise
    ours = occlusion_accuracy_map(
        model, volumes, labels, window_mm=4, stride_mm=3, voxel_size=1.0, max_batch=16
    )
    expected = naive_accuracy_map(model, volumes, labels, (4,) * 3, (3,) * 3)
    assert ours.dtype == np.float32 and ours.shape == (13, 15, 11)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    as_list = occlusion_accuracy_map(
        model, [v.numpy() for v in volumes], labels.tolist(), window_mm=4, stride_mm=3,
        voxel_size=1.0, incremental=False,
    )  # fmt: skip
    np.testing.assert_allclose(as_list, expected, atol=1e-6)


def test_accuracy_map_known_answer():
    """Only windows hiding the whole cube flip the prediction (accuracy 1 -> 0)."""
    model = CubePresence().eval()
    volumes = torch.rand(4, 1, 12, 13, 11) + 0.5
    labels = np.zeros(4, dtype=int)  # the cube is present: class 0, all correct
    drop = occlusion_accuracy_map(model, volumes, labels, window_mm=6, stride_mm=2, voxel_size=1.0)
    hides, count = np.zeros((12, 13, 11)), np.zeros((12, 13, 11))
    for b in window_grid((12, 13, 11), 6, 2, 1.0).boxes():
        box = tuple(slice(lo, hi) for lo, hi in b.tolist())
        count[box] += 1
        hides[box] += all(
            s.start <= c.start and c.stop <= s.stop for s, c in zip(box, CubeSum.box, strict=True)
        )
    assert hides.max() == 8  # 2 x 2 x 2 window positions hide the whole cube
    np.testing.assert_allclose(drop, hides / count, atol=1e-6)


def test_accuracy_map_rejects_bad_input():
    model = chain_net()
    volumes = _inputs(n=2)
    with pytest.raises(ShapeError, match="labels"):
        occlusion_accuracy_map(model, volumes, [0])
    with pytest.raises(ConfigError, match="classifier"):
        occlusion_accuracy_map(chain_net(n_out=1), volumes, [0, 1], voxel_size=1.0)
    with pytest.raises(ShapeError, match="resample"):
        occlusion_accuracy_map(model, [volumes[0], volumes[1, :, :5]], [0, 1], voxel_size=1.0)


def test_batch_invariant_and_leaves_no_hooks_after_errors():
    model = chain_net()
    x = _inputs(n=2)
    method = Occlusion(model, window_mm=4, stride_mm=3, voxel_size=1.0)
    both = method.attribute(x, target=[1, 0])
    torch.testing.assert_close(both[1:], method.attribute(x[1:], target=0), atol=0, rtol=0)

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(2, 1, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    boom = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        OcclusionEngine(boom, x[:1], window_grid(x.shape[2:], 4, 3, 1.0).boxes())
    assert not boom.conv._forward_hooks and not boom.conv._forward_pre_hooks


class TwoChannelPresence(nn.Module):
    """Class 0 while channel 0 or channel 1 still holds anything in the cube: only a window
    that blanks the cube in *both* channels flips it (BrainImageNet's GMD + GMV)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[(slice(None), slice(0, 2), *CubeSum.box)].sum(dim=(1, 2, 3, 4))
        return torch.stack([s, torch.full_like(s, 1e-3)], dim=1)


def test_accuracy_map_occludes_every_channel_together():
    """The same answer as one channel: a cube blanked in one channel only would flip nothing."""
    volumes = torch.rand(3, 2, 12, 13, 11) + 0.5
    labels = np.zeros(3, dtype=int)
    two = occlusion_accuracy_map(
        TwoChannelPresence().eval(), volumes, labels, window_mm=6, stride_mm=2, voxel_size=1.0
    )
    one = occlusion_accuracy_map(
        CubePresence().eval(), volumes[:, :1], labels, window_mm=6, stride_mm=2, voxel_size=1.0
    )
    assert two.max() > 0.5  # some windows flip every subject's prediction
    np.testing.assert_allclose(two, one, atol=1e-6)
