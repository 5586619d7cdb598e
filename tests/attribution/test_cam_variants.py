"""HiResCAM and LayerCAM against hand-computed maps and hand-built models with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nilearn.datasets import load_mni152_template
from sklearn.metrics import roc_auc_score

from brainmaps.attribution import HiResCAM, LayerCAM, create_method, get_method
from brainmaps.attribution._spatial import layer_geometry, upsample_aligned
from brainmaps.attribution.base import find_module
from brainmaps.data.io import load_img
from brainmaps.data.preprocess import mni_brain_mask, mni_grid, resample_to_grid
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model

#: xin2019's three blocks take this grid to 3 x 3 x 2 feature voxels.
SHAPE = (38, 38, 30)


def _random_xin2019(seed: int = 0) -> torch.nn.Module:
    """A seeded xin2019 with non-trivial batch-norm statistics (no training)."""
    torch.manual_seed(seed)
    model = create_model(
        "xin2019", in_channels=1, n_classes=2, input_shape=list(SHAPE), channels=[2, 4, 4]
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _inputs(shape=SHAPE, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, 1, *shape), generator=torch.Generator().manual_seed(seed))


def _acts_and_grads(model, layer: str, x, target: int):
    """The layer's output and the gradient of logit ``target`` there (own hook, no library
    code)."""
    store = {}
    handle = find_module(model, layer).register_forward_hook(
        lambda _m, _i, out: store.setdefault("a", out)
    )
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(logits[:, target].sum(), store["a"])
    return store["a"].detach(), grads, logits.detach()


def _upsampled(model, layer: str, x, raw):
    geometry = layer_geometry(model, find_module(model, layer), x)
    return upsample_aligned(raw, tuple(x.shape[2:]), geometry)


@pytest.mark.parametrize("relu", [True, False])
def test_hires_cam_at_the_last_pool_of_xin2019_is_head_weight_times_activation(relu):
    """The last pooling of xin2019 feeds the dense head directly, so ``dy_c/dA`` is the
    head's weight row ``W_c`` (reshaped to the feature grid) and HiResCAM's feature map is
    ``Σ_k W_ck ⊙ A_k`` in closed form, no autograd in the oracle. Without ReLU it sums to
    the logit minus the bias."""
    model, x, layer = _random_xin2019(), _inputs(), "features.block3.pool"
    store = {}
    handle = find_module(model, layer).register_forward_hook(
        lambda _m, _i, out: store.setdefault("a", out)
    )
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    acts = store["a"]
    assert acts.shape[2:] == (3, 3, 2)
    fc = model.classifier.fc
    raw = (fc.weight[1].view(1, *acts.shape[1:]) * acts).sum(dim=1)
    torch.testing.assert_close(raw.flatten(1).sum(1), logits[:, 1] - fc.bias[1])
    expected = _upsampled(model, layer, x, raw.clamp(min=0) if relu else raw)
    got = create_method("hires_cam", model, layer=layer, relu=relu).attribute(x, target=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("layer", [None, "features.block3.relu"])
def test_hires_cam_equals_the_hand_computed_sum_of_gradient_times_activation(layer, relu):
    """``None``: the default ``"auto"``, here ``features.block2.relu`` (16x16x12; block 2's
    pooling keeps 8x8x6 < 8 on one axis)."""
    model, x = _random_xin2019(seed=2), _inputs(seed=3)
    name = layer or "features.block2.relu"
    acts, grads, _ = _acts_and_grads(model, name, x, target=0)
    raw = (grads * acts).sum(dim=1)
    expected = _upsampled(model, name, x, raw.clamp(min=0) if relu else raw)
    got = HiResCAM(model, layer=layer, relu=relu).attribute(x, target=0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_at_a_same_size_layer_the_maps_are_the_raw_feature_maps():
    """gap_cnn's first block keeps the input grid (padding 1, no pooling before it), so
    the aligned upsampling is the identity and the maps are compared before it."""
    torch.manual_seed(4)
    model = create_model("gap_cnn", input_shape=[12, 12, 12], channels=[3, 4]).eval()
    x, layer = _inputs((12, 12, 12), seed=5), "features.block1.relu"
    acts, grads, _ = _acts_and_grads(model, layer, x, target=1)
    hires = HiResCAM(model, layer=layer, relu=False).attribute(x, target=1)
    torch.testing.assert_close(hires, (grads * acts).sum(dim=1), rtol=1e-5, atol=1e-7)
    layer_cam = LayerCAM(model, layer=layer).attribute(x, target=1)
    expected = (grads.clamp(min=0) * acts).sum(dim=1).clamp(min=0)
    torch.testing.assert_close(layer_cam, expected, rtol=1e-5, atol=1e-7)
    assert (grads < 0).any() and (grads > 0).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hires_cam_equals_grad_cam_through_global_average_pooling(seed):
    """Through global average pooling and one linear layer ``dy_c/dA_k = W_ck / D`` at
    every voxel, so averaging it first (Grad-CAM) changes nothing. Measured: largest
    difference 1e-7 of the largest value."""
    torch.manual_seed(seed)
    model = create_model("gap_cnn", input_shape=[22, 22, 22], channels=[2, 4, 4]).eval()
    x = _inputs((22, 22, 22), seed=seed)
    for relu in (True, False):  # at Grad-CAM's layer (HiResCAM's default is "auto")
        hires = create_method("hires_cam", model, layer=model.target_layer, relu=relu)
        hires = hires.attribute(x, target=1)
        grad_cam = create_method("grad_cam", model, relu=relu).attribute(x, target=1)
        torch.testing.assert_close(hires, grad_cam, rtol=1e-5, atol=1e-6)
    assert hires.abs().max() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hires_cam_differs_from_grad_cam_with_a_dense_head(seed):
    """xin2019's head weighs every feature voxel differently, so the averaged gradient of
    Grad-CAM is not the gradient. Measured (no ReLU, seeds 0-5): relative L2 difference
    0.97-1.01."""
    model, x = _random_xin2019(seed), _inputs(seed=seed + 100)
    hires = create_method("hires_cam", model, layer=model.target_layer, relu=False)
    hires = hires.attribute(x, target=1)
    grad_cam = create_method("grad_cam", model, relu=False).attribute(x, target=1)
    assert (hires - grad_cam).norm() > 0.5 * hires.norm()


def _bright_detector(shape, gains=(1.0,), signs=(1.0,)) -> torch.nn.Module:
    """xin2019 whose only evidence is voxels brighter than 3, in ``len(gains)`` last-block
    channels.

    Block 1 computes ``relu(x - 3)`` (a centre tap and a bias), block 2 passes it on,
    block 3's channel ``k`` is ``gains[k]`` times it (centre taps, max pooling), batch
    norm is the identity (up to its epsilon), and the class-1 logit is the sum of the
    last block's features, channel ``k`` counted with sign ``signs[k]``; the class-0
    logit is minus the class-1 logit. With one channel of sign +1 this is
    ``tests/attribution/test_explain_run.py``'s ``_hand_built_bright_detector``.
    """
    model = create_model(
        "xin2019", in_channels=1, n_classes=2, input_shape=list(shape), channels=[1, 1, len(gains)]
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for k, bias in enumerate([-3.0, 0.0, 0.0], start=1):
            block = getattr(model.features, f"block{k}")
            block.conv.weight[:, 0, 1, 1, 1] = torch.tensor(gains if k == 3 else (1.0,))
            block.conv.bias.fill_(bias)
            block.bn.weight.fill_(1.0)
        per_channel = model.classifier.fc.in_features // len(gains)
        model.classifier.fc.weight[1] = torch.tensor(signs).repeat_interleave(per_channel)
        model.classifier.fc.weight[0] = -model.classifier.fc.weight[1]
    return model


def _bright_inputs(shape=SHAPE, n: int = 2) -> torch.Tensor:
    """Noise with a few bright cubes, so the detector has evidence to find."""
    x = _inputs(shape, n=n, seed=7)
    x[:, :, 4:12, 6:14, 5:11] += 5.0
    x[1:, :, 20:30, 18:28, 14:24] += 4.0
    return x


def test_layer_cam_equals_hires_cam_when_no_gradient_is_negative():
    """The class-1 logit of the one-channel detector is a positive sum of its pooled
    features: every gradient at the last block is 0 or 1."""
    model, x = _bright_detector(SHAPE), _bright_inputs()
    _, grads, _ = _acts_and_grads(model, model.target_layer, x, target=1)
    assert grads.min() == 0 and grads.max() == 1
    hires = create_method("hires_cam", model).attribute(x, target=1)
    torch.testing.assert_close(create_method("layer_cam", model).attribute(x, target=1), hires)
    assert hires.max() > 1


def test_layer_cam_drops_the_negative_gradients_that_hires_cam_keeps():
    """Two last-block channels ``A_0 = f`` and ``A_1 = f / 2`` counted with signs +1 and -1:
    for class 1 HiResCAM is ``ReLU(f - f/2) = f/2`` and LayerCAM ``f`` (twice HiResCAM);
    for class 0 the signs flip, HiResCAM is ``ReLU(-f/2) = 0`` and LayerCAM ``f/2``."""
    model, x = _bright_detector(SHAPE, gains=(1.0, 0.5), signs=(1.0, -1.0)), _bright_inputs()
    last = model.target_layer  # where the two signed channels are
    hires = get_method("hires_cam")(model, layer=last)
    layer_cam = get_method("layer_cam")(model, layer=last)
    h1, l1 = hires.attribute(x, target=1), layer_cam.attribute(x, target=1)
    assert h1.max() > 1
    torch.testing.assert_close(l1, 2 * h1)
    assert not hires.attribute(x, target=0).any()
    torch.testing.assert_close(layer_cam.attribute(x, target=0), h1)


def test_layer_cam_has_no_relu_option():
    with pytest.raises(ConfigError, match="unknown option"):
        create_method("layer_cam", _random_xin2019(), relu=False)
    with pytest.raises(ConfigError, match="hires_cam option relu"):
        create_method("hires_cam", _random_xin2019(), relu="no")


def _planted(tiny_cohort, seed: int):
    """Inputs and ground truth of ``test_explain_run``'s hand-built localisation check:
    the z-scored MNI template (maximum 2.4) plus noise, +4 inside the cohort's planted
    regions, on the 36x44x36 MNI grid."""
    shape = (36, 44, 36)
    grid = mni_grid(shape)
    truth = resample_to_grid(load_img(tiny_cohort / "ground_truth_mask.nii.gz"), grid, 0) > 0.5
    template = resample_to_grid(load_mni152_template(resolution=2), grid)
    volume = torch.from_numpy(((template - template.mean()) / template.std()).astype(np.float32))
    noise = torch.randn(4, 1, *shape, generator=torch.Generator().manual_seed(seed))
    x = volume + 0.3 * noise + 4.0 * torch.from_numpy(truth.astype(np.float32))
    return x, truth, mni_brain_mask(grid), _bright_detector(shape)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["hires_cam", "layer_cam"])
def test_the_variants_localise_the_evidence_of_a_hand_built_model(tiny_cohort, method, seed):
    """At the default (last) layer, on the model whose only evidence is voxels above 3.
    Measured: ROC AUC 0.830-0.835 over noise seeds 0-2 for both (no training, so no machine
    dependence; 0.77-0.80 at ``features.block2.relu``). Lower than Grad-CAM's 0.95 on the
    same model, and rightly so: the max pooling after the layer uses one voxel of each
    2x2x2 window, and only those get a gradient, so the map marks the voxels the network
    reads, not the whole bright region."""
    x, truth, brain, model = _planted(tiny_cohort, seed)
    mean_map = create_method(method, model).attribute(x, target=1).numpy().mean(axis=0)
    assert roc_auc_score(truth[brain], mean_map[brain]) >= 0.75


@pytest.mark.parametrize("method", ["hires_cam", "layer_cam"])
def test_the_variants_are_class_sensitive(tiny_cohort, method):
    """The class-0 logit falls with the same features: every gradient is <= 0, so both
    maps are zero, and HiResCAM without its ReLU is exactly minus the class-1 map."""
    x, _, _, model = _planted(tiny_cohort, 0)
    explainer = create_method(method, model)
    assert explainer.attribute(x, target=1).numpy().max() > 1
    assert not explainer.attribute(x, target=0).numpy().any()
    signed = HiResCAM(model, relu=False)
    torch.testing.assert_close(signed.attribute(x, target=0), -signed.attribute(x, target=1))
