"""The fold-ensemble map of a new scan, against hand-built linear models with known maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution.ensemble import ensemble_map, method_settings
from brainmaps.exceptions import ConfigError, ShapeError

SHAPE = (6, 7, 5)
SIGNED = {"absolute": False}  # the signed gradient: exactly the weights of a linear model


def linear_model(weights: np.ndarray) -> nn.Module:
    """Two logits: class 1 scores ``sum(w * x)``, class 0 scores ``-sum(w * x)``."""
    w = torch.as_tensor(weights.ravel(), dtype=torch.float32)
    linear = nn.Linear(w.numel(), 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([-w, w]))
    return nn.Sequential(nn.Flatten(), linear).eval()


def test_each_model_weighs_the_same_whatever_its_scale():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
    volume = rng.random(SHAPE, dtype=np.float32)
    models = [linear_model(a), linear_model(100 * b)]  # b's raw gradients are 100x larger
    got = ensemble_map(models, volume, "gradient", unit=1, options=SIGNED)
    expected = (a / np.abs(a).max() + b / np.abs(b).max()) / 2  # the gradient is w
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == SHAPE


def test_the_unit_chooses_the_class_and_keeps_the_sign():
    w = np.zeros(SHAPE)
    w[1, 2, 3], w[4, 4, 1] = 2.0, -1.0
    volume = np.ones(SHAPE, dtype=np.float32)
    up = ensemble_map([linear_model(w)], volume, "gradient", unit=1, options=SIGNED)
    down = ensemble_map([linear_model(w)], volume, "gradient", unit=0, options=SIGNED)
    assert up[1, 2, 3] == pytest.approx(1.0) and up[4, 4, 1] == pytest.approx(-0.5)
    np.testing.assert_allclose(down, -up)


def test_a_model_with_an_all_zero_map_adds_zeros():
    w = np.zeros(SHAPE)
    w[0, 0, 0] = 3.0
    volume = np.ones(SHAPE, dtype=np.float32)
    models = [linear_model(w), linear_model(np.zeros(SHAPE))]
    got = ensemble_map(models, volume, "gradient", unit=1, options=SIGNED)
    assert got[0, 0, 0] == pytest.approx(0.5)
    assert np.count_nonzero(got) == 1


def test_multichannel_volumes_and_bad_inputs():
    w = np.random.default_rng(1).normal(size=(2, *SHAPE))
    volume = np.ones((2, *SHAPE), dtype=np.float32)
    got = ensemble_map([linear_model(w)], volume, "gradient", unit=1, options=SIGNED)
    summed = w.sum(axis=0)  # channels summed, as every method's default map
    np.testing.assert_allclose(got, summed / np.abs(summed).max(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="at least one model"):
        ensemble_map([], volume, "gradient", unit=1, options=SIGNED)
    with pytest.raises(ShapeError, match="expected"):
        ensemble_map([linear_model(w)], np.ones(5, np.float32), "gradient", unit=1, options=SIGNED)


def test_method_settings_checks_names_and_options():
    assert method_settings(["gradient", "gradient"]) == {"gradient": {}}
    with pytest.raises(ConfigError):
        method_settings(["no_such_method"])
    with pytest.raises(ConfigError, match="occlusion"):
        method_settings(["gradient"], {"occlusion": {"window_mm": 12}})


def test_default_gradient_maps_are_absolute():
    w = np.zeros(SHAPE)
    w[1, 1, 1], w[2, 2, 2] = -4.0, 2.0
    got = ensemble_map([linear_model(w)], np.ones(SHAPE, np.float32), "gradient", unit=1)
    assert got[1, 1, 1] == pytest.approx(1.0) and got[2, 2, 2] == pytest.approx(0.5)
