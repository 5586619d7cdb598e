"""The train command's options come from the config dataclasses, written once."""

from __future__ import annotations

import argparse
import dataclasses

from brainmaps.cli import train
from brainmaps.cli.options import add_config_options, config_options, overrides
from brainmaps.run.config import ExecutionConfig, TrainingConfig


def test_every_training_and_execution_field_has_one_flag():
    keys = {(o.section, o.key) for o in train.OPTIONS}
    for section, cls in (("training", TrainingConfig), ("execution", ExecutionConfig)):
        for f in dataclasses.fields(cls):
            assert (section, f.name) in keys, f.name
    flags = [o.flag for o in train.OPTIONS]
    assert len(flags) == len(set(flags))


def test_help_and_default_come_from_the_dataclass():
    by_key = {o.key: o for o in train.OPTIONS}
    assert by_key["epochs"].default == TrainingConfig().epochs
    assert "epochs" in by_key["epochs"].help.lower()
    assert by_key["amp"].flag == "--no-amp"
    assert by_key["grid_shape"].flag == "--grid"


def test_only_given_options_override():
    options = config_options(TrainingConfig, "training")
    parser = argparse.ArgumentParser()
    add_config_options(parser, options)
    assert overrides(parser.parse_args([]), options) == {}
    given = overrides(parser.parse_args(["--epochs", "3", "--no-amp"]), options)
    assert given == {"training": {"epochs": 3, "amp": False}}


def test_model_options_from_the_command_line(tmp_path):
    import pytest

    from brainmaps.cli.main import build_parser
    from brainmaps.exceptions import ConfigError

    parser = build_parser()
    base = ["train", str(tmp_path), "--target", "group", "--model", "inception_resnet_v2"]
    args = parser.parse_args(
        [*base, "--model-option", "width=0.25", "--model-option", "blocks=[1, 1, 1]"]
    )
    config = train.config_from_args(args)
    assert config.model.options == {"width": 0.25, "blocks": [1, 1, 1]}
    assert config.model.name == "inception_resnet_v2"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        train.config_from_args(parser.parse_args([*base, "--model-option", "width"]))
