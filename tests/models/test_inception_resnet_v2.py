"""The 3D Inception-ResNet-v2 of BrainImageNet (Lu et al.)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution import create_method
from brainmaps.attribution.grad_cam import GradCAM
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import InceptionResNetV2, create_model, list_models
from brainmaps.models.inception_resnet_v2 import BatchNormNoScale, min_input_size
from brainmaps.training.loop import train_model

PAPER = {"in_channels": 2, "input_shape": (96, 120, 86)}
TINY = {"in_channels": 1, "input_shape": (37, 37, 37), "width": 0.125, "blocks": (1, 1, 1)}


def _meta(**kwargs) -> InceptionResNetV2:
    """The network built on the meta device: shapes and counts without memory or init."""
    with torch.device("meta"):
        return create_model("inception_resnet_v2", **{**PAPER, **kwargs})


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("inception_resnet_v2", **TINY).eval()


def _keras_count(n_outputs: int) -> tuple[int, int]:
    """(trainable weights, BatchNorm moving statistics) of Lu et al.'s Keras model.

    Tallied from ``code/keras_applications/Inception_resnet_v2_3D.py`` (``InceptionResNetV2``)
    and the head of ``TrainFromScratch_All_Sex_InceptionResNetV2_wc1_mwc1.py``, with 2 input
    channels: every ``conv3d_bn`` is a convolution without bias (``k * c_in * c_out``)
    and a BatchNorm with ``scale=False`` (``c_out`` betas trainable, ``2 c_out`` moving
    mean/variance not); each block's ``_conv`` is a 1x1x1 convolution with bias and no
    BatchNorm back to the block's input channels; the top is ``conv_7b`` (1536),
    global average pooling, dropout and ``Dense(n_outputs)`` (the 1000-way softmax of
    the Keras application is popped before the model is built).
    """
    trainable = [0]
    bn = [0]

    def conv_bn(c_in, c_out, k):
        trainable[0] += k * c_in * c_out + c_out
        bn[0] += 2 * c_out
        return c_out

    def up(mixed, channels):
        trainable[0] += mixed * channels + channels

    # stem: 2 -> 64 (valid) -> 96 -> [pool 96 | conv 96 s2] -> 192
    conv_bn(2, 64, 27), conv_bn(64, 96, 27), conv_bn(96, 96, 27)
    conv_bn(192, 96, 1), conv_bn(96, 128, 27)  # -> 128
    conv_bn(192, 96, 1), conv_bn(96, 96, 7), conv_bn(96, 96, 7), conv_bn(96, 96, 7)
    conv_bn(96, 128, 27)  # 1x7x1, 1x1x7, 7x1x1, 3x3x3 -> 128; concat 256
    conv_bn(256, 256, 27)  # | max-pool 256 -> 512
    for _ in range(5):  # block35 on 512: branches 32, 32, 64 -> 128
        conv_bn(512, 32, 1), conv_bn(512, 32, 1), conv_bn(32, 32, 27)
        conv_bn(512, 32, 1), conv_bn(32, 48, 27), conv_bn(48, 64, 27)
        up(128, 512)
    conv_bn(512, 384, 27), conv_bn(512, 256, 1), conv_bn(256, 256, 27)
    conv_bn(256, 384, 27)  # mixed_6a: 384 + 384 + 512 = 1280
    for _ in range(10):  # block17 on 1280: 192 + 192 -> 384
        conv_bn(1280, 192, 1), conv_bn(1280, 128, 1), conv_bn(128, 148, 7)
        conv_bn(148, 170, 7), conv_bn(170, 192, 7)
        up(384, 1280)
    conv_bn(1280, 256, 1), conv_bn(256, 384, 27)
    conv_bn(1280, 256, 1), conv_bn(256, 288, 27)
    conv_bn(1280, 256, 1), conv_bn(256, 288, 27), conv_bn(288, 320, 27)
    # mixed_7a: 384 + 288 + 320 + 1280 = 2272
    for _ in range(5):  # block8 on 2272: 192 + 256 -> 448
        conv_bn(2272, 192, 1), conv_bn(2272, 192, 1), conv_bn(192, 212, 3)
        conv_bn(212, 234, 3), conv_bn(234, 256, 3)
        up(448, 2272)
    conv_bn(2272, 1536, 1)  # conv_7b
    trainable[0] += 1536 * n_outputs + n_outputs  # Dense
    return trainable[0], bn[0]


def test_parameter_count_matches_the_keras_code():
    """54,012,539 trainable weights with one output (their Dense(1, sigmoid) head).

    The issue's 54.05 M is Keras' total, which adds the 42,084 moving means and
    variances of the BatchNorm layers (buffers in PyTorch): 54,054,623. brainmaps'
    binary classifiers output two logits, 1,537 weights more: 54,014,076.
    """
    one, moving = _keras_count(1)
    two, _ = _keras_count(2)
    assert (one, two, moving) == (54_012_539, 54_014_076, 42_084)
    assert one + moving == 54_054_623  # "54.05 M"
    for n_classes, expected in [(1, one), (2, two)]:
        model = _meta(n_classes=n_classes)
        assert sum(p.numel() for p in model.parameters()) == expected
    model = _meta()
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in _batchnorms(model))
    assert stats == moving


def test_structure_grids_and_residual_scales():
    model = _meta()
    f = model.features
    assert [len(f.block_a), len(f.block_b), len(f.block_c)] == [5, 10, 5]
    assert [b.scale for b in f.block_a] == [0.17] * 5
    assert [b.scale for b in f.block_b] == [0.1] * 10
    assert [b.scale for b in f.block_c] == [0.2] * 4 + [1.0]
    assert all(isinstance(b.relu, nn.ReLU) for b in [*f.block_a, *f.block_b, *f.block_c[:4]])
    assert isinstance(f.block_c[-1].relu, nn.Identity)  # the last block is linear
    stem = f.stem.split2.branches[1]
    assert [stem[i].conv.kernel_size for i in (1, 2, 3)] == [(1, 7, 1), (1, 1, 7), (7, 1, 1)]
    x = torch.empty(1, 2, 96, 120, 86, device="meta")
    shapes = []
    for name in ["stem", "block_a", "reduction_a", "block_b", "reduction_b", "block_c"]:
        x = getattr(f, name)(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [
        (512, 21, 27, 19),
        (512, 21, 27, 19),
        (1280, 10, 13, 9),
        (1280, 10, 13, 9),
        (2272, 4, 6, 4),
        (2272, 4, 6, 4),
    ]
    assert f.conv_7b(x).shape == (1, 1536, 4, 6, 4)
    assert model(torch.empty(3, 2, 96, 120, 86, device="meta")).shape == (3, 2)


def _batchnorms(model):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_batchnorm_without_scale_and_convolutions_without_bias(tiny):
    bns = _batchnorms(tiny)
    assert bns and all(isinstance(m, BatchNormNoScale) for m in bns)
    names = [n for n, _ in tiny.named_parameters()]
    bn_names = {n for n, m in tiny.named_modules() if isinstance(m, BatchNormNoScale)}
    assert not [n for n in names if n.rsplit(".", 1)[0] in bn_names and n.endswith("weight")]
    assert all(
        m.bias.requires_grad and torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns
    )
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)  # Keras' defaults
    convs = {n: m for n, m in tiny.named_modules() if isinstance(m, nn.Conv3d)}
    assert all((m.bias is not None) == n.endswith(".up") for n, m in convs.items())


def test_reduced_variant_forward_backward_smallest_input(tiny):
    assert min_input_size() == 37
    x = torch.randn(2, *[1, 37, 37, 37])
    tiny.train()
    try:
        out = tiny(x)
        assert out.shape == (2, 2)
        out.sum().backward()
    finally:
        tiny.eval()
        tiny.zero_grad(set_to_none=True)
    assert tiny.features.conv_7b(tiny.features[:-1](x)).shape == (2, 192, 1, 1, 1)


def test_reduced_variant_two_channels_and_regression():
    torch.manual_seed(0)
    options = {**TINY, "in_channels": 2, "input_shape": (48, 56, 48), "n_classes": 1}
    model = create_model("inception_resnet_v2", **options)
    out = model(torch.randn(2, 2, 48, 56, 48))
    assert out.shape == (2, 1)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_registered_config_round_trip_and_errors():
    assert "inception_resnet_v2" in list_models()
    model = _meta(width=0.25, blocks=[2, 3, 2], n_classes=3)
    assert model.config == {
        "in_channels": 2,
        "n_classes": 3,
        "input_shape": [96, 120, 86],
        "width": 0.25,
        "blocks": [2, 3, 2],
        "dropout": 0.5,
    }
    again = _meta(**model.config)
    assert [p.shape for p in model.parameters()] == [p.shape for p in again.parameters()]
    with pytest.raises(ShapeError, match="at least 37 voxels"):
        create_model("inception_resnet_v2", input_shape=(36, 120, 86))
    for bad in [{"width": 0}, {"width": "wide"}, {"blocks": (1, 1, 0)}, {"blocks": (1, 2)}]:
        with pytest.raises(ConfigError, match=next(iter(bad))):
            create_model("inception_resnet_v2", **{**TINY, **bad})
    with pytest.raises(ConfigError, match="dropout"):
        create_model("inception_resnet_v2", **TINY, dropout=1.0)
    with pytest.raises(ShapeError, match="expects inputs"):
        _meta()(torch.empty(1, 1, 96, 120, 86, device="meta"))


def test_grad_cam_default_layer_and_cam(tiny):
    x = torch.randn(2, 1, 37, 37, 37, generator=torch.Generator().manual_seed(1))
    assert tiny.target_layer == "features.conv_7b.relu"
    grad_cam = GradCAM(tiny)
    assert grad_cam.layer_name == "features.conv_7b.relu"
    assert grad_cam.attribute(x).shape == (2, 37, 37, 37)
    cam = create_method("cam", tiny)
    assert cam.fc is tiny.classifier.fc
    maps = cam.attribute(x, target=1)
    assert maps.shape == (2, 37, 37, 37) and torch.isfinite(maps).all()
    with torch.no_grad():  # a 1-voxel feature grid: the map's mean plus the bias is the score
        scores = tiny(x)[:, 1]
    torch.testing.assert_close(maps.mean(dim=(1, 2, 3)) + tiny.classifier.fc.bias[1], scores)


def test_one_training_step_through_the_loop():
    torch.manual_seed(0)
    model = create_model("inception_resnet_v2", **TINY)
    rng = np.random.default_rng(0)
    volumes = list(rng.normal(size=(4, 37, 37, 37)).astype(np.float32))
    before = [p.detach().clone() for p in model.parameters()]
    result = train_model(
        model, volumes, np.array([0, 1, 0, 1]), [0, 1, 2, 3], [], epochs=1, batch_size=4,
        device="cpu", progress=False, seed=0, bn_recalibration=False,
    )  # fmt: skip
    assert len(result.history) == 1 and np.isfinite(result.history["train_loss"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in _batchnorms(model))
