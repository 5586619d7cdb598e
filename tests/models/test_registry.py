"""Tests of the model registry."""

from __future__ import annotations

import pytest
from torch import nn

from brainmaps.exceptions import ConfigError
from brainmaps.models import Xin2019, create_model, list_models, register_model, registry


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_xin2019_is_registered():
    names = list_models()
    assert "xin2019" in names
    assert names == sorted(names)
    model = create_model("xin2019", input_shape=[24, 24, 24], channels=[4, 8, 8])
    assert isinstance(model, Xin2019)


def test_unknown_name_lists_available_models():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'.*xin2019"):
        create_model("resnet")


def test_bad_keyword_is_named():
    with pytest.raises(ConfigError, match=r"n_clases.*n_classes"):
        create_model("xin2019", n_clases=3)


def test_bad_value_raises_config_error():
    with pytest.raises(ConfigError, match="dropout"):
        create_model("xin2019", dropout=2.0)


@pytest.mark.parametrize("name", ["GapCNN", "gap-cnn", "2net", "gap__cnn", ""])
def test_names_must_be_snake_case(name):
    with pytest.raises(ConfigError, match="snake_case"):
        register_model(name)


def test_register_and_create(clean_registry):
    @register_model("tiny_net")
    class TinyNet(nn.Module):
        def __init__(self, width: int, n_classes: int = 2):
            super().__init__()
            self.fc = nn.Linear(width, n_classes)

    assert "tiny_net" in list_models()
    assert create_model("tiny_net", width=3).fc.in_features == 3
    with pytest.raises(ConfigError, match="width"):
        create_model("tiny_net")  # missing required parameter
    with pytest.raises(ConfigError, match="already registered"):

        @register_model("tiny_net")
        class Other(nn.Module):
            pass


def test_registry_fixture_restores(clean_registry):
    assert "tiny_net" not in list_models()
