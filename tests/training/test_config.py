"""Run configuration: validation, YAML round trip, clear errors."""

from __future__ import annotations

import pytest

from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.exceptions import ConfigError
from brainmaps.training.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    load_config,
)


def _config(**training) -> RunConfig:
    return RunConfig(
        data=DataConfig(source="cohort", target="group"),
        preprocess=PreprocessConfig(grid_shape=(22, 26, 22)),
        model=ModelConfig(options={"channels": [4, 8, 16]}),
        training=TrainingConfig(**training),
        out="runs/x",
    )


def test_defaults_follow_the_paper():
    t = TrainingConfig()
    assert (t.folds, t.seed, t.lr, t.epochs) == (10, 42, 3e-4, 20)


def test_yaml_round_trip(tmp_path):
    config = _config(folds=3, epochs=2)
    config.to_yaml(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert again.preprocess.grid_shape == (22, 26, 22)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("folds", 1, "training.folds"),
        ("epochs", 0, "training.epochs"),
        ("lr", -1.0, "training.lr"),
        ("val_fraction", 0.7, "training.val_fraction"),
        ("device", "tpu", "training.device"),
    ],
)
def test_invalid_values_name_the_parameter(field, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainingConfig(**{field: value})


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {source: a, target: b}\ntraining: {epochz: 3}\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(path)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_model_options_cannot_override_derived_values():
    with pytest.raises(ConfigError, match="n_classes"):
        ModelConfig(options={"n_classes": 3})
