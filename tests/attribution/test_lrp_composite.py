"""LRP composite rule (iNNvestigate's LRPSequentialPresetA, Hofmann et al. 2022).

Hand-computed relevance on a two-layer network, and conservation of every rule on every
registered regression-capable model (BatchNorm folded where present).
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from brainmaps.attribution.base import create_method
from brainmaps.attribution.lrp import LRP
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model

# -- a two-layer network computed by hand -------------------------------------------------


def _two_layer():
    """Conv3d(2 -> 2, 1x1x1) -> ReLU -> Flatten -> Linear(2 -> 1), bias-free.

    Input x = (1, 2) (two channels, one voxel). Hidden pre-activations:
    z0 = 2*1 - 0.5*2 = 1, z1 = -1*1 + 1*2 = 1, so h = (1, 1); output y = 3*1 - 1*1 = 2.
    """
    conv = nn.Conv3d(2, 2, 1, bias=False)
    fc = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[2.0, -0.5], [-1.0, 1.0]]).view(2, 2, 1, 1, 1))
        fc.weight.copy_(torch.tensor([[3.0, -1.0]]))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc).double()
    return model, torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1, 1)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # epsilon at the linear layer: R_h = h * u = (3, -1); z+ at the convolution:
        # hidden 0 only takes x0's 2*1 = 2, hidden 1 only x1's 1*2 = 2 -> R = (3, -1)
        ({"rule": "composite"}, (3.0, -1.0)),
        ({"rule": "preset_a"}, (3.0, -1.0)),
        # epsilon = 0.1 divides by z + 0.1 at both layers: the linear z = 2, the z+ = 2
        ({"rule": "composite", "epsilon": 0.1}, (12 / 4.41, -4 / 4.41)),
        # epsilon everywhere: x0 = 2*3 + (-1)(-1) = 7, x1 = (-1)*3 + 2*(-1) = -5
        ({"rule": "epsilon"}, (7.0, -5.0)),
        # z+ everywhere: the linear layer gives all to h0 (R_h = (2, 0)), then x0
        ({"rule": "alpha1beta0"}, (2.0, 0.0)),
        # composite with a flat first layer: each hidden unit splits its R equally
        ({"rule": "composite", "first_layer_rule": "flat"}, (1.0, 1.0)),
    ],
)
def test_composite_relevance_matches_the_hand_computation(options, expected):
    model, x = _two_layer()
    eps = options.pop("epsilon", 1e-12)
    relevance = LRP(model, epsilon=eps, **options).attribute(x, keep_channels=True)
    torch.testing.assert_close(
        relevance.reshape(-1), torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"first_layer_rule": "composite"}, "pass it as rule"),
        ({"rule": "presetA"}, "'composite'"),
    ],
)
def test_composite_option_errors_name_the_option(options, message):
    with pytest.raises(ConfigError, match=message):
        create_method("lrp", _two_layer()[0], **options)


# -- conservation on the registered models -------------------------------------------------

RULES = ["epsilon", "alpha1beta0", "composite"]
FIRST = [None, "zb", "flat", "wsquare"]
MODELS = {
    # name: (options, grid)
    "mrinet": ({"channels": [3, 4, 5], "hidden": 6}, (9, 10, 8)),
    "xin2019": ({"channels": [3, 4, 4]}, (22, 26, 22)),
    "gap_cnn": ({"channels": [3, 4]}, (8, 9, 8)),
    "sfcn": ({"channels": [3, 4, 5]}, (8, 10, 8)),
}


def _bias_free_regressor(name):
    """``name`` with one output (regression), every bias and BatchNorm shift 0 and
    non-trivial BatchNorm scales (so folding is exercised and conservation is exact)."""
    options, grid = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, n_classes=1, input_shape=grid, **options)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d | nn.Linear) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm3d | nn.BatchNorm1d):
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.running_mean.zero_()
                m.bias.zero_()
    x = torch.randn((2, 1, *grid), generator=torch.Generator().manual_seed(1))
    return model.eval(), x


@pytest.mark.parametrize(("name", "rule", "first"), list(itertools.product(MODELS, RULES, FIRST)))
def test_every_rule_conserves_the_output_of_bias_free_regression_models(name, rule, first):
    """Sum of input relevance == the model's output, for every rule and first-layer rule
    (epsilon 1e-12 in float64; rtol 1e-6, atol 1e-10). alpha1beta0 and the composite
    conserve here because every unit with relevance has a positive contribution (ReLU
    inputs >= 0, random weights of both signs), as in the tests of test_lrp.py."""
    model, x = _bias_free_regressor(name)
    maps = LRP(model, rule=rule, first_layer_rule=first, epsilon=1e-12, dtype="float64")
    relevance = maps.attribute(x)
    with torch.no_grad():
        out = copy.deepcopy(model).double()(x.double())[:, 0]
    assert out.abs().min() > 1e-6  # a non-trivial output to conserve
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), out, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", ["sfcn", "mrinet"])
def test_composite_differs_from_both_single_rules(name):
    """On SFCN (BatchNorm folded) and MRInet the composite is neither the epsilon nor the
    alpha1beta0 map (it mixes them by layer type); all three conserve (above). (The tiny
    xin2019 above has one active feature before its only dense layer, where both rules
    agree.)"""
    model, x = _bias_free_regressor(name)
    maps = {
        r: LRP(model, rule=r, epsilon=1e-12, dtype="float64").attribute(x)
        for r in ("composite", "epsilon", "alpha1beta0")
    }
    scale = maps["epsilon"].abs().max()
    assert (maps["composite"] - maps["epsilon"]).abs().max() > 1e-3 * scale
    assert (maps["composite"] - maps["alpha1beta0"]).abs().max() > 1e-3 * scale
