"""The shared tracer and receptive-field geometry (brainmaps.models.tracing)."""

import pytest
import torch
from torch import nn

from brainmaps.models.tracing import (
    ACTIVATIONS,
    POINTWISE,
    ReceptiveField,
    layer_receptive_field,
    receptive_field,
    trace,
    window,
)


def _stack() -> nn.Sequential:
    """Conv3d(k=3, s=1) -> MaxPool3d(2) -> Conv3d(k=3, s=2), no padding."""
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.MaxPool3d(2), nn.Conv3d(2, 2, 3, stride=2))


def test_hand_computed_stack():
    conv1, pool, conv2 = _stack()
    # conv1: cell i sees input i..i+2
    assert receptive_field([conv1], 3) == ReceptiveField((0,) * 3, (1,) * 3, (3,) * 3)
    # pool: cell j sees conv1 cells 2j, 2j+1 -> input 2j..2j+3
    assert receptive_field([conv1, pool], 3) == ReceptiveField((0,) * 3, (2,) * 3, (4,) * 3)
    # conv2: cell i sees pool cells 2i..2i+2 -> conv1 cells 4i..4i+5 -> input 4i..4i+7
    field = receptive_field([conv1, pool, conv2], 3)
    assert field == ReceptiveField((0,) * 3, (4,) * 3, (8,) * 3)
    assert field.offset == (3.5, 3.5, 3.5) and field.exact


def test_padding_dilation_and_non_cubic_windows():
    conv = nn.Conv3d(1, 1, kernel_size=(3, 1, 5), stride=(1, 2, 1), padding=(1, 0, 2))
    dilated = nn.Conv3d(1, 1, kernel_size=3, dilation=2, padding=1)
    field = receptive_field([conv, dilated], 3)
    # conv: start -p, size k; dilated: size + 2 * (3 - 1) * stride, start - 1 * stride
    assert field.start == (-2, -2, -3)
    assert field.stride == (1, 2, 1)
    assert field.size == (7, 9, 9)
    assert field.offset == (1.0, 2.0, 1.0)


def test_string_paddings_match_pytorch():
    same = window(nn.Conv3d(1, 1, kernel_size=4, padding="same"), 3)
    assert same.padding == (1, 1, 1)  # total 3: one voxel before, two after
    assert window(nn.Conv3d(1, 1, kernel_size=4, padding="valid"), 3).padding == (0, 0, 0)
    assert window(nn.AvgPool3d(2), 3).stride == (2, 2, 2)
    assert window(nn.ReLU(), 3) is None


def test_pointwise_modules_keep_the_grid_and_unknown_ones_make_it_inexact():
    conv1, pool, conv2 = _stack()
    modules = [conv1, nn.BatchNorm3d(2), nn.GELU(), nn.Dropout3d(), pool, nn.Identity(), conv2]
    assert receptive_field(modules, 3) == receptive_field([conv1, pool, conv2], 3)
    field = receptive_field([conv1, pool, nn.AdaptiveAvgPool3d(1), conv2], 3)
    assert not field.exact
    assert (field.start, field.stride, field.size) == ((0,) * 3, (2,) * 3, (4,) * 3)
    assert set(ACTIVATIONS) <= set(POINTWISE) and nn.Conv3d not in POINTWISE


def test_layer_geometry_is_that_of_the_layer_output_for_leaves_and_blocks():
    conv1, pool, conv2 = _stack()
    model = nn.Sequential(nn.Sequential(conv1, nn.ReLU()), pool, conv2, nn.Flatten())
    x = torch.zeros(2, 1, 12, 14, 16)
    # a leaf conv or pool counts itself (its input geometry would misplace the map)
    assert layer_receptive_field(model, conv1, x).offset == (1.0, 1.0, 1.0)
    assert layer_receptive_field(model, pool, x) == ReceptiveField((0,) * 3, (2,) * 3, (4,) * 3)
    assert layer_receptive_field(model, conv2, x).offset == (3.5, 3.5, 3.5)
    # a block: everything it runs
    assert layer_receptive_field(model, model[0], x).size == (3, 3, 3)
    assert not layer_receptive_field(model, model[3], x).exact


def test_xin2019_third_block():
    from brainmaps.models import create_model

    model = create_model("xin2019", input_shape=(22, 26, 22)).eval()
    x = torch.zeros(1, 1, 22, 26, 22)
    layers = dict(model.named_modules())
    for name in ("features.block3.conv", "features.block3.relu"):
        field = layer_receptive_field(model, layers[name], x)
        assert field.offset == (8.5, 8.5, 8.5) and field.stride == (4, 4, 4)
    pooled = layer_receptive_field(model, layers["features.block3.pool"], x)
    assert pooled.offset == (10.5, 10.5, 10.5) and pooled.stride == (8, 8, 8)


def _support(out: torch.Tensor, x: torch.Tensor, cell: tuple[int, ...]) -> list[range]:
    """Per axis, the input indices whose gradient reaches output ``cell`` (channel 0)."""
    (grad,) = torch.autograd.grad(out[(0, 0, *cell)], x, retain_graph=True)
    hit = grad[0, 0].nonzero()
    return [range(int(hit[:, a].min()), int(hit[:, a].max()) + 1) for a in range(hit.shape[1])]


@pytest.mark.parametrize("dims", [(13, 10, 17), (12, 19)])
def test_geometry_equals_the_gradient_support_on_non_cubic_inputs(dims):
    """Dimension-agnostic: 3D and 2D stacks, checked against autograd."""
    nd = len(dims)
    conv, pool = (nn.Conv3d, nn.AvgPool3d) if nd == 3 else (nn.Conv2d, nn.AvgPool2d)
    model = nn.Sequential(conv(1, 1, 3), pool(2), nn.ReLU(), conv(1, 1, 3, stride=2, dilation=1))
    for p in model.parameters():
        nn.init.constant_(p, 0.1)  # positive weights: every voxel in the window counts
    x = torch.rand(1, 1, *dims, requires_grad=True)
    out = model(x)
    field = receptive_field(model, nd)
    assert field.stride == (4,) * nd and field.size == (8,) * nd
    for cell in [(0,) * nd, tuple(n - 1 for n in out.shape[2:])]:
        expected = [
            range(a + s * i, a + s * i + n)
            for a, s, n, i in zip(field.start, field.stride, field.size, cell, strict=True)
        ]
        assert _support(out, x, cell) == expected


def test_trace_records_leaf_calls_in_forward_order_and_removes_hooks():
    model = _stack()
    x = torch.zeros(1, 1, 12, 14, 16)
    calls = trace(model, x).calls
    assert [c.module for c in calls] == list(model)
    assert [c.name for c in calls] == ["0", "1", "2"]
    assert calls[0].in_shape == (1, 1, 12, 14, 16) and calls[0].out_shape == (1, 2, 10, 12, 14)
    assert calls[2].out_shape == (1, 2, 2, 2, 3)
    assert all(c.follows for c in calls) and calls[0].input is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_trace_removes_hooks_when_the_forward_fails():
    model = _stack()
    with pytest.raises(RuntimeError):
        trace(model, torch.zeros(1, 3, 12, 12, 12))  # wrong number of channels
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_trace_stops_at_until_and_keeps_tensors():
    model = _stack()
    traced = trace(model, torch.rand(1, 1, 12, 12, 12), until=model[1], keep=True)
    assert [c.module for c in traced.calls] == [model[0], model[1]]
    assert traced.output is None and not traced.returns_last
    assert traced.calls[1].input is traced.calls[0].output
    whole = trace(model, torch.rand(1, 1, 12, 12, 12), until=model)
    assert len(whole.calls) == 3


class _Functional(nn.Module):
    """A chain with an in-place edit and a functional operation between modules."""

    def __init__(self, edit: str):
        super().__init__()
        self.conv, self.relu, self.edit = nn.Conv3d(1, 1, 3), nn.ReLU(), edit

    def forward(self, x):
        h = self.conv(x)
        if self.edit == "inplace":
            h.add_(1.0)
        elif self.edit == "functional":
            h = h * 2.0
        return self.relu(h)


@pytest.mark.parametrize("edit", ["none", "inplace", "functional"])
def test_snapshot_tells_a_pure_chain(edit):
    traced = trace(_Functional(edit), torch.rand(1, 1, 6, 6, 6), snapshot=True)
    relu = traced.calls[1]
    assert relu.follows == (edit != "functional")
    assert relu.unchanged == (edit == "none")
    assert traced.pure == (edit == "none") and traced.returns_last


class _Shared(nn.Module):
    """Two conv blocks that share one ReLU and one pooling module (``shared=False``: a
    module of each per block, so the same network written without sharing)."""

    def __init__(self, shared: bool = True, head_act: bool = False):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv3d(3, 3, 3, padding=1)
        self.act1, self.pool1 = nn.ReLU(), nn.MaxPool3d(2)
        self.act2, self.pool2 = (self.act1, self.pool1) if shared else (nn.ReLU(), nn.MaxPool3d(2))
        self.fc = nn.Linear(3 * 4**3, 2)
        self.head_act = head_act

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        out = self.fc(x.flatten(1))
        return self.act2(out) if self.head_act else out


def test_a_module_called_twice_has_the_geometry_of_its_last_call():
    """Oracle: the same network with one module per call."""
    x = torch.rand(1, 1, 16, 16, 16)
    shared, separate = _Shared(), _Shared(shared=False)
    assert layer_receptive_field(shared, shared.act1, x) == layer_receptive_field(
        separate, separate.act2, x
    )
    assert layer_receptive_field(shared, shared.pool1, x) == layer_receptive_field(
        separate, separate.pool2, x
    )
    # the first call's geometry is not the last one's: the test tells them apart
    assert layer_receptive_field(separate, separate.act1, x) != layer_receptive_field(
        separate, separate.act2, x
    )


def test_feature_layers_list_a_shared_module_at_its_last_call_and_not_a_flat_one():
    from brainmaps.models.tracing import feature_layers

    x = torch.rand(1, 1, 16, 16, 16)
    assert feature_layers(_Shared(), x) == [("act1", (8, 8, 8)), ("pool1", (4, 4, 4))]
    # act2 (= act1) also acts on the flat output of the head: no spatial map to explain
    assert feature_layers(_Shared(head_act=True), x) == [("pool1", (4, 4, 4))]


@pytest.mark.parametrize("method", ["grad_cam", "hires_cam", "layer_cam"])
def test_a_cam_at_a_shared_module_is_the_cam_at_its_last_call(method):
    """Oracle: the same weights with one module per call; the map is placed with the
    geometry of the call whose activations it is made of (the last one)."""
    from brainmaps.attribution import create_method

    torch.manual_seed(0)
    shared = _Shared().eval()
    separate = _Shared(shared=False).eval()
    separate.load_state_dict(shared.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    for a, b in (("act1", "act2"), ("pool1", "pool2")):
        got = create_method(method, shared, layer=a).attribute(x, target=1)
        expected = create_method(method, separate, layer=b).attribute(x, target=1)
        torch.testing.assert_close(got, expected)
    assert create_method(method, shared, layer="auto").resolved_layer(x) == "act1"
