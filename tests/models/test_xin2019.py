"""Tests of the Xin et al. (2019) 3D CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import Xin2019, create_model
from brainmaps.models.xin2019 import min_input_size


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_the_paper():
    model = Xin2019()
    assert n_params(model) == 322_818
    assert model.classifier.fc.in_features == 128 * 5 * 7 * 5


def test_default_forward_gives_two_logits():
    model = Xin2019().eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 58, 70, 58))
    assert out.shape == (1, 2)


@pytest.mark.parametrize(
    ("kwargs", "batch_shape", "out_shape"),
    [
        (dict(in_channels=2, n_classes=3, input_shape=(22, 30, 26), channels=(4, 8, 8)),
         (2, 2, 22, 30, 26), (2, 3)),
        (dict(n_classes=1, input_shape=(24, 24, 24), channels=(4, 8, 8)),
         (3, 1, 24, 24, 24), (3, 1)),
        (dict(input_shape=(10, 12, 16), channels=(4, 8)), (2, 1, 10, 12, 16), (2, 2)),
    ],
)  # fmt: skip
def test_other_shapes_and_channels(kwargs, batch_shape, out_shape):
    model = Xin2019(**kwargs).eval()
    with torch.no_grad():
        assert model(torch.randn(batch_shape)).shape == out_shape


def test_linear_size_follows_input_shape():
    # 30 -> conv 28 -> pool 14 -> 12 -> 6 -> 4 -> 2 ; 22 -> 20 -> 10 -> 8 -> 4 -> 2 -> 1
    model = Xin2019(input_shape=(30, 22, 22), channels=(4, 8, 6))
    assert model.classifier.fc.in_features == 6 * 2 * 1 * 1


def test_min_input_size():
    assert [min_input_size(k) for k in (1, 2, 3)] == [4, 10, 22]
    Xin2019(input_shape=(22, 22, 22), channels=(2, 2, 2))  # the minimum builds
    with pytest.raises(ShapeError, match=r"input_shape=\[21, 30, 30\].*at least 22"):
        Xin2019(input_shape=(21, 30, 30))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(n_classes=0), "n_classes"),
        (dict(in_channels=1.5), "in_channels"),
        (dict(input_shape=(58, 70)), "input_shape"),
        (dict(channels=()), "channels"),
        (dict(channels=(32, -1, 8)), r"channels\[1\]"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        Xin2019(**kwargs)


def test_blocks_are_addressable_by_name():
    model = Xin2019(input_shape=(24, 24, 24), channels=(4, 8, 8))
    for k in (1, 2, 3):
        block = model.get_submodule(f"features.block{k}")
        assert isinstance(block.conv, nn.Conv3d)
        assert block.conv.padding == (0, 0, 0)
        assert isinstance(block.bn, nn.BatchNorm3d)
        assert isinstance(block.relu, nn.ReLU) and not block.relu.inplace
        assert isinstance(block.pool, nn.MaxPool3d)
    assert model.target_layer == "features.block3.relu"
    assert isinstance(model.get_submodule(model.target_layer), nn.ReLU)
    assert model.classifier.dropout.p == 0.5


def test_config_rebuilds_the_same_architecture():
    model = Xin2019(in_channels=2, n_classes=3, input_shape=(24, 26, 28), channels=(4, 8, 8))
    assert model.config == {
        "in_channels": 2,
        "n_classes": 3,
        "input_shape": [24, 26, 28],
        "channels": [4, 8, 8],
        "dropout": 0.5,
    }
    clone = create_model("xin2019", **model.config)
    clone.load_state_dict(model.state_dict())  # same keys and shapes
    assert n_params(clone) == n_params(model)


def test_forward_rejects_wrong_input_shape():
    model = Xin2019(input_shape=(24, 24, 24), channels=(4, 8, 8))
    with pytest.raises(ShapeError, match=r"\(N, 1, 24, 24, 24\)"):
        model(torch.zeros(1, 1, 24, 24, 25))
