"""MRInet (Hofmann et al. 2022): architecture, Keras pooling, output bias, LRP, training."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.attribution import create_method
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import MRInet, create_model, list_models
from brainmaps.models.mrinet import pooled_size
from brainmaps.training.loop import train_model

GRID = (9, 10, 11)  # odd and even axes: both Keras padding cases
SMALL = {"input_shape": GRID, "channels": [2, 3, 3, 4, 3], "hidden": 5}


def _x(n=2, shape=GRID, seed=1):
    return torch.randn((n, 1, *shape), generator=torch.Generator().manual_seed(seed))


def _small(**options):
    torch.manual_seed(0)
    return create_model("mrinet", **{**SMALL, **options})


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_registered_and_rebuildable_from_config():
    assert "mrinet" in list_models()
    model = _small(n_classes=3)
    assert isinstance(model, MRInet)
    again = create_model("mrinet", **model.config)
    assert [p.shape for p in model.parameters()] == [p.shape for p in again.parameters()]
    assert model.target_layer == "features.block5.relu"


def test_parameter_count_at_xai4mri_input():
    """781,265 parameters at xai4mri's 1 x 198^3 input (their pretrained T1/FLAIR/SWI models).

    Derivation from ``MRInet.create`` (xai4mri): 3x3x3 "same" convolutions 1->16, 16->16,
    16->32, 32->64 with biases: 448 + 6,928 + 13,856 + 55,360; the 1x1x1 convolution
    64->32: 2,080. Five "same" max-poolings (3, stride 2) take 198 -> 99 -> 50 -> 25 -> 13
    -> 7, so the flattened features are 32 * 7^3 = 10,976 and Dense(64) has 10,976 * 64 +
    64 = 702,528; the regression output Dense(1) 65. Sum: 781,265. A classifier's output
    has no bias (``use_bias=False``): 64 * k weights.
    """
    with torch.device("meta"):
        regression = create_model("mrinet", n_classes=1, input_shape=(198, 198, 198))
        classifier = create_model("mrinet", n_classes=2, input_shape=(198, 198, 198))
    assert _count(regression) == 781_265
    assert _count(classifier) == 781_265 - 65 + 128
    assert regression.classifier.dense.in_features == 32 * 7**3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in regression.modules())


def _keras_same_pool(x):
    """Literal Keras MaxPool3D(3, strides=2, padding="same"): -inf padding, smaller half first."""
    pads = []
    for n in reversed(x.shape[2:]):
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool3d(F.pad(x, pads, value=-math.inf), 3, 2)


@pytest.mark.parametrize("shape", [(1, 2, 3), (4, 5, 6), (9, 10, 11)])
def test_poolings_reproduce_keras_same_padding(shape):
    model = create_model("mrinet", input_shape=shape, channels=[2, 2], hidden=2)
    x = torch.randn(1, 2, *shape)
    pool = model.features.block1.pool
    torch.testing.assert_close(pool(x), _keras_same_pool(x), rtol=0, atol=0)
    assert pool(x).shape[2:] == tuple(pooled_size(n) for n in shape)


def test_regression_and_classification_forward_backward():
    x = _x()
    for n_classes in (1, 4):
        model = _small(n_classes=n_classes)
        out = model(x)
        assert out.shape == (2, n_classes)
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert _small(n_classes=4).classifier.fc.bias is None  # as Hofmann et al.'s classifier


def test_any_grid_of_one_voxel_is_accepted_and_inputs_are_checked():
    model = create_model("mrinet", input_shape=(1, 1, 1), channels=[2, 2], hidden=2)
    assert model(torch.zeros(3, 1, 1, 1, 1)).shape == (3, 1)
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(N, 1, 9, 10, 11\)"):
        _small()(torch.zeros(1, 1, 9, 10, 12))
    with pytest.raises(ShapeError, match="expects inputs"):
        _small()(torch.zeros(1, 2, *GRID))


def test_output_bias_option():
    model = _small(output_bias=57.5)
    assert model.classifier.fc.bias.item() == 57.5
    assert model.config["output_bias"] == 57.5
    hidden = [m.bias for m in model.modules() if isinstance(m, nn.Conv3d | nn.Linear)][:-1]
    assert all(torch.count_nonzero(b) == 0 for b in hidden)  # Keras: zero biases
    assert _small().classifier.fc.bias.item() == 0.0  # standardised targets: mean 0
    with pytest.raises(ConfigError, match=r"output_bias.*n_classes=1"):
        _small(n_classes=2, output_bias=1.0)
    with pytest.raises(ConfigError, match="output_bias must be a finite number"):
        _small(output_bias=float("nan"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": [4]}, "at least two widths"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"hidden": 0}, "hidden must be a positive integer"),
        ({"input_shape": [0, 4, 4]}, "input_shape"),
    ],
)
def test_bad_parameters_name_the_parameter(options, message):
    with pytest.raises(ConfigError, match=message):
        _small(**options)


# -- LRP: the network is sequential and BatchNorm-free ---------------------------------


def _with_hidden_biases(model):
    """Non-zero biases in every layer (a trained network's state)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d | nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
    return model


def _outputs(model, x):
    with torch.no_grad():
        return copy.deepcopy(model).eval().double()(x.double())


@pytest.mark.parametrize("rule", ["epsilon", "alpha1beta0"])
def test_lrp_conserves_relevance_on_a_bias_free_mrinet(rule):
    model, x = _small(n_classes=3), _x()  # Keras init: every bias is zero
    lrp = create_method("lrp", model, rule=rule, epsilon=1e-12, dtype="float64")
    relevance = lrp.attribute(x, target=[2, 0])
    out = _outputs(model, x)
    expected = torch.stack([out[0, 2], out[1, 0]])
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), expected, rtol=1e-6, atol=1e-10)


def test_lrp_epsilon_relevance_is_the_output_minus_the_output_bias():
    model, x = _small(output_bias=0.7), _x()
    relevance = create_method("lrp", model, rule="epsilon", epsilon=1e-12, dtype="float64")
    total = relevance.attribute(x, target=0).sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, _outputs(model, x)[:, 0] - 0.7, rtol=1e-6, atol=1e-10)


def test_lrp_runs_with_hidden_biases_and_float32():
    model, x = _with_hidden_biases(_small()), _x()
    maps = create_method("lrp", model, rule="epsilon").attribute(x, target=0)
    assert maps.shape == (2, *GRID) and torch.isfinite(maps).all()


@pytest.mark.parametrize("method", ["grad_cam", "hires_cam"])
def test_cam_methods_run_at_the_default_layer(method):
    model, x = _small(), _x()
    maps = create_method(method, model).attribute(x, target=0)
    assert maps.shape == (2, *GRID) and torch.isfinite(maps).all()


def test_one_training_epoch_on_random_regression_data():
    rng = np.random.default_rng(0)
    volumes = list(rng.normal(size=(8, *GRID)).astype(np.float32))
    ages = rng.uniform(20, 80, size=8)
    result = train_model(
        _small(),
        volumes,
        ages,
        list(range(6)),
        [6, 7],
        task="regression",
        epochs=1,
        batch_size=3,
        device="cpu",
        progress=False,
    )
    assert result.history["train_loss"].notna().all()
    assert result.target_stats[0] == pytest.approx(ages[:6].mean())
