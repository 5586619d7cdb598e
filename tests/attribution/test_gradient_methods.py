"""Oracles for the gradient-based methods: explicit formulas on tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.attribution import (
    CAM,
    GradCAM,
    Gradient,
    GuidedBackprop,
    IntegratedGradients,
    SmoothGrad,
)
from brainmaps.attribution._spatial import layer_geometry, upsample_aligned
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model

SHAPE = (8, 9, 7)


def _x(n=2, seed=0):
    return torch.randn((n, 1, *SHAPE), generator=torch.Generator().manual_seed(seed))


class ConvLinear(nn.Module):
    """conv(1->K, 3x3x3, no padding) -> ReLU -> flatten -> linear(2)."""

    def __init__(self, k=3, relu_name="act"):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(1, k, 3)
        self.add_module(relu_name, nn.ReLU())
        self.relu_name = relu_name
        n = k * int(np.prod([s - 2 for s in SHAPE]))
        self.fc = nn.Linear(n, 2)

    def forward(self, x):
        return self.fc(getattr(self, self.relu_name)(self.conv(x)).flatten(1))


def test_grad_cam_equals_the_explicit_formula():
    model = ConvLinear().eval()
    x = _x()
    maps = GradCAM(model, layer="act").attribute(x, target=1)
    with torch.no_grad():
        acts = F.relu(model.conv(x))  # (N, K, 6, 7, 5)
    # y = W . vec(A) + b, so dy/dA_k = W_1 reshaped; weights are its spatial means
    w = model.fc.weight[1].view(acts.shape[1:]).mean(dim=(1, 2, 3))
    cam = F.relu((w.view(1, -1, 1, 1, 1) * acts).sum(dim=1))
    # a valid 3x3x3 conv puts feature i on input voxel i + 1; borders repeat the edge
    expected = F.pad(cam.unsqueeze(1), (1, 1, 1, 1, 1, 1), mode="replicate").squeeze(1)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)


def test_grad_cam_pools_over_all_three_axes_and_any_class():
    model = ConvLinear().eval()
    x = _x()
    for target in (0, 1):
        signed = GradCAM(model, layer="act", relu=False).attribute(x, target=target)
        with torch.no_grad():
            acts = F.relu(model.conv(x))
        w = model.fc.weight[target].view(acts.shape[1:]).mean(dim=(1, 2, 3))
        expected = (w.view(1, -1, 1, 1, 1) * acts).sum(dim=1)
        torch.testing.assert_close(signed[:, 1:-1, 1:-1, 1:-1], expected, rtol=1e-5, atol=1e-6)


def test_grad_cam_unknown_layer_lists_choices():
    with pytest.raises(ConfigError, match="conv"):
        GradCAM(ConvLinear(), layer="block9")


def test_upsampling_places_features_at_receptive_field_centres():
    model = create_model("xin2019", input_shape=(58, 70, 58)).eval()
    layer = dict(model.named_modules())["features.block3.relu"]
    geometry = layer_geometry(model, layer, torch.zeros(1, 1, 58, 70, 58))
    assert geometry.offset == (8.5, 8.5, 8.5) and geometry.stride == (4.0, 4.0, 4.0)
    feat = torch.zeros(1, 11, 14, 11)
    feat[0, 5, 7, 5] = 1.0
    up = upsample_aligned(feat, (58, 70, 58), geometry)[0]
    peak = torch.nonzero(up == up.max()).float().mean(dim=0)
    torch.testing.assert_close(peak, torch.tensor([28.5, 36.5, 28.5]))


def _explicit_guided(model: ConvLinear, x: torch.Tensor, target: int) -> torch.Tensor:
    """Springenberg's rule written out: positive gradient through positive ReLU inputs."""
    z = model.conv(x)
    g_a = model.fc.weight[target].view(z.shape[1:]).expand_as(z)
    g_z = g_a.clamp(min=0) * (z > 0)
    g_x = F.conv_transpose3d(g_z, model.conv.weight)
    return g_x.clamp(min=0).sum(dim=1)


@pytest.mark.parametrize("relu_name", ["act", "nonlinearity"])
def test_guided_backprop_matches_the_explicit_rule_whatever_the_relu_name(relu_name):
    model = ConvLinear(relu_name=relu_name).eval()
    x = _x()
    maps = GuidedBackprop(model).attribute(x, target=0)
    with torch.no_grad():
        expected = _explicit_guided(model, x, 0)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert (maps >= 0).all()


def test_guided_backprop_restores_inplace_relus():
    model = ConvLinear().eval()
    model.act.inplace = True
    GuidedBackprop(model).attribute(_x(), target=0)
    assert model.act.inplace is True


def test_gradient_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 2)).eval()
    grad = Gradient(model, absolute=False).attribute(_x(), target=1)
    torch.testing.assert_close(grad[0], model[1].weight[1].view(SHAPE).detach())
    assert torch.equal(Gradient(model).attribute(_x(), target=1), grad.abs())


def test_smoothgrad_without_noise_is_the_gradient():
    model = ConvLinear().eval()
    x = _x()
    smooth = SmoothGrad(model, noise_level=0.0, n_samples=3).attribute(x, target=1)
    torch.testing.assert_close(smooth, Gradient(model).attribute(x, target=1))


def test_smoothgrad_of_a_linear_model_ignores_noise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(SHAPE)), 2)).eval()
    x = _x()
    smooth = SmoothGrad(model, noise_level=0.5, absolute=False, batch_size=3).attribute(x, 1)
    torch.testing.assert_close(smooth, Gradient(model, absolute=False).attribute(x, 1))


@pytest.mark.parametrize("baseline", [0.0, -0.5])
def test_integrated_gradients_completeness(baseline):
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=(22, 22, 22), channels=[2, 4, 4]).eval()
    x = torch.randn(2, 1, 22, 22, 22, generator=torch.Generator().manual_seed(2))
    ig = IntegratedGradients(model, n_steps=48, baseline=baseline, batch_size=16)
    maps = ig.attribute(x, target=1)
    with torch.no_grad():
        delta = model(x)[:, 1] - model(torch.full_like(x, baseline))[:, 1]
    total = maps.sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, delta, rtol=2e-2, atol=2e-3)


def _gap_model():
    torch.manual_seed(0)
    model = create_model("gap_cnn", input_shape=(12, 14, 12), channels=[3, 5])
    with torch.no_grad():
        model.classifier.fc.weight.normal_()
    return model.eval()


def test_cam_is_grad_cam_on_a_gap_network_up_to_scale():
    model = _gap_model()
    x = torch.randn(2, 1, 12, 14, 12, generator=torch.Generator().manual_seed(4))
    cam = CAM(model).attribute(x, target=1)
    # Grad-CAM's weights are W_c / n (the gradient of a mean); without its final ReLU
    # (which it applies before upsampling) the two maps are equal up to that scale.
    grad_cam = GradCAM(model, relu=False).attribute(x, target=1)
    n_feature_voxels = 6 * 7 * 6  # one 2x pooling before the last block
    torch.testing.assert_close(grad_cam * n_feature_voxels, cam, rtol=1e-4, atol=1e-5)
    assert cam.min() < 0 < cam.max()


def test_cam_mean_plus_bias_is_the_logit():
    model = _gap_model()
    x = torch.randn(1, 1, 12, 14, 12, generator=torch.Generator().manual_seed(5))
    acts = {}
    handle = model.features.block2.relu.register_forward_hook(lambda m, i, o: acts.update(a=o))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    w = model.classifier.fc.weight[0]
    raw = (w.view(1, -1, 1, 1, 1) * acts["a"]).sum(dim=1)
    torch.testing.assert_close(raw.mean() + model.classifier.fc.bias[0], logits[0, 0])


def test_cam_refuses_networks_without_gap():
    model = create_model("xin2019", input_shape=(22, 22, 22), channels=[2, 4, 4])
    with pytest.raises(ConfigError, match="global average pooling"):
        CAM(model)
