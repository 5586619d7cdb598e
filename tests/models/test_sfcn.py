"""SFCN (Peng et al. 2021): architecture, parameter counts, bins head, LRP, CAM, training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution import create_method
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import SFCN, create_model, list_models
from brainmaps.models.sfcn import min_input_size
from brainmaps.training.loop import train_model

GRID = (32, 32, 32)  # the smallest grid six blocks accept
SMALL = {"input_shape": GRID, "channels": [2, 3, 3, 4, 4, 3]}


def _x(n=2, shape=GRID, seed=1):
    return torch.randn((n, 1, *shape), generator=torch.Generator().manual_seed(seed))


def _small(**options):
    torch.manual_seed(0)
    return create_model("sfcn", **{**SMALL, **options})


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_registered_and_rebuildable_from_config():
    assert "sfcn" in list_models()
    model = _small(n_classes=3)
    assert isinstance(model, SFCN)
    again = create_model("sfcn", **model.config)
    assert [p.shape for p in model.parameters()] == [p.shape for p in again.parameters()]
    assert model.target_layer == "features.block6.relu"
    names = [type(m).__name__ for m in model.features.block1]
    assert names == ["Conv3d", "BatchNorm3d", "MaxPool3d", "ReLU"]  # pool before ReLU
    assert [type(m).__name__ for m in model.features.block6] == ["Conv3d", "BatchNorm3d", "ReLU"]


def test_parameter_counts_of_the_paper_network():
    """2,952,936 parameters with 40 age bins, 2,950,401 with one output (at 1 x 160x192x160).

    Derivation from ``SFCN`` of Peng et al.'s ``dp_model/model_files/sfcn.py``: each block
    has a biased convolution and a BatchNorm (2 parameters per channel). 3x3x3 blocks
    1->32, 32->64, 64->128, 128->256, 256->256: 896 + 64, 55,360 + 128, 221,312 + 256,
    884,992 + 512, 1,769,728 + 512; the 1x1x1 block 256->64: 16,448 + 128; in all
    2,950,336. The output 1x1x1 convolution 64->40 adds 2,600 (2,952,936, "about 3
    million"), a single output 65 (2,950,401). The pooling has no parameters, so the
    count does not depend on the input size.
    """
    with torch.device("meta"):
        paper = create_model("sfcn", bins=40)
        regression = create_model("sfcn", n_classes=1)
        other_grid = create_model("sfcn", input_shape=(96, 112, 96))
    assert _count(paper) == 2_952_936
    assert _count(regression) == 2_950_401
    assert _count(other_grid) == 2_950_401


def test_feature_grid_at_the_paper_input_is_5_6_5():
    channels = [1, 1, 1, 1, 1, 1]
    model = create_model("sfcn", input_shape=(160, 192, 160), channels=channels).eval()
    with torch.no_grad():
        assert model.features(torch.zeros(1, 1, 160, 192, 160)).shape == (1, 1, 5, 6, 5)


def test_regression_classification_and_bins_outputs_with_backward():
    x = _x()
    for options, width in (({}, 1), ({"n_classes": 4}, 4), ({"bins": 40}, 40)):
        model = _small(**options)
        out = model(x)
        assert out.shape == (2, width)
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_adaptive_pooling_takes_any_grid_above_the_minimum():
    assert min_input_size() == 32
    model = _small(input_shape=(40, 33, 48))
    assert model(_x(shape=(40, 33, 48))).shape == (2, 1)
    with pytest.raises(ShapeError, match="at least 32 voxels"):
        _small(input_shape=(31, 32, 32))
    with pytest.raises(ShapeError, match="at least 4 voxels"):
        create_model("sfcn", input_shape=(3, 8, 8), channels=[2, 2, 2])
    with pytest.raises(ShapeError, match=r"expects inputs of shape \(N, 1, 32, 32, 32\)"):
        _small()(torch.zeros(1, 1, 32, 32, 33))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": [4]}, "at least two widths"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"bins": 1}, "bins must be None or an integer >= 2"),
        ({"bins": 40, "n_classes": 2}, "bins=40 is a brain-age"),
    ],
)
def test_bad_parameters_name_the_parameter(options, message):
    with pytest.raises(ConfigError, match=message):
        _small(**options)


# -- attribution -----------------------------------------------------------------------


def _bias_free(model):
    """Zero biases and BatchNorm shifts, non-trivial scales: conservation must be exact."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d | nn.Linear):
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm3d):
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.running_mean.zero_()
                m.bias.zero_()
    return model


@pytest.mark.parametrize("rule", ["epsilon", "alpha1beta0"])
def test_lrp_folds_batchnorm_and_conserves_relevance(rule):
    # eight pooled features: every output has positive contributions for alpha1beta0
    model, x = _bias_free(_small(n_classes=3, channels=[2, 3, 3, 4, 4, 8])), _x()
    lrp = create_method("lrp", model, rule=rule, epsilon=1e-12, dtype="float64")
    relevance = lrp.attribute(x, target=[1, 2])
    with torch.no_grad():
        out = copy.deepcopy(model).eval().double()(x.double())
    expected = torch.stack([out[0, 1], out[1, 2]])
    torch.testing.assert_close(relevance.sum(dim=(1, 2, 3)), expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("method", ["grad_cam", "hires_cam", "cam", "lrp"])
def test_attribution_methods_run_at_the_default_layer(method):
    model, x = _small(n_classes=2), _x()
    maps = create_method(method, model).attribute(x, target=1)
    assert maps.shape == (2, *GRID) and torch.isfinite(maps).all()


def test_one_training_epoch_on_random_regression_data():
    rng = np.random.default_rng(0)
    volumes = list(rng.normal(size=(6, *GRID)).astype(np.float32))
    ages = rng.uniform(40, 80, size=6)
    result = train_model(
        _small(),
        volumes,
        ages,
        list(range(4)),
        [4, 5],
        task="regression",
        epochs=1,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    assert result.history["train_loss"].notna().all()
    assert result.target_stats[0] == pytest.approx(ages[:4].mean())
