"""The global-average-pooling network that CAM runs on."""

from __future__ import annotations

import pytest
import torch

from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import create_model, list_models


def test_registered_and_rebuildable_from_config():
    assert "gap_cnn" in list_models()
    model = create_model("gap_cnn", input_shape=(20, 24, 20), channels=[4, 8, 8])
    again = create_model("gap_cnn", **model.config)
    assert [p.shape for p in model.parameters()] == [p.shape for p in again.parameters()]
    assert model.target_layer == "features.block3.relu"


def test_output_is_a_linear_function_of_the_pooled_features():
    torch.manual_seed(0)
    model = create_model("gap_cnn", input_shape=(16, 16, 16), channels=[4, 6], n_classes=3).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (2, 6, 8, 8, 8)  # padded convs, one pooling
        expected = model.classifier.fc(features.mean(dim=(2, 3, 4)))
        torch.testing.assert_close(model(x), expected)


def test_parameter_count_of_the_default_network():
    # conv 1->16, 16->32, 32->64, 64->64 (3x3x3 + bias), 4 BatchNorms, Linear 64->2
    convs = [(1, 16), (16, 32), (32, 64), (64, 64)]
    expected = sum(o * (i * 27 + 1) + 2 * o for i, o in convs) + 64 * 2 + 2
    assert sum(p.numel() for p in create_model("gap_cnn").parameters()) == expected


def test_bad_parameters_and_inputs_are_clear():
    with pytest.raises(ShapeError, match="at least 8 voxels"):
        create_model("gap_cnn", input_shape=(6, 20, 20), channels=[2, 2, 2, 2])
    with pytest.raises(ConfigError, match="dropout"):
        create_model("gap_cnn", dropout=1.5)
    model = create_model("gap_cnn", input_shape=(16, 16, 16), channels=[2, 2])
    with pytest.raises(ShapeError, match="expects inputs"):
        model(torch.zeros(1, 1, 16, 16, 18))
