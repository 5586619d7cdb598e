"""Run configuration: validation, YAML round trip, clear errors."""

from __future__ import annotations

import dataclasses
import shutil
import warnings

import pytest
import yaml

from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.run.config import (
    DataConfig,
    ExecutionConfig,
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
    ],
)
def test_invalid_values_name_the_parameter(field, value, words):
    with pytest.raises(ConfigError, match=words):
        TrainingConfig(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("device", "tpu", "execution.device"), ("n_jobs", 0, "execution.n_jobs")],
)
def test_invalid_execution_values_name_the_parameter(field, value, words):
    with pytest.raises(ConfigError, match=words):
        ExecutionConfig(**{field: value})


def test_execution_is_not_part_of_the_identity(tmp_path):
    config = _config(folds=3)
    moved = config.replace(execution=ExecutionConfig(device="cpu", n_jobs=4, cache_dir="/x"))
    assert config.differences(moved) == []
    assert config.differences(_config(folds=4)) == ["training.folds"]
    config.to_yaml(tmp_path / "config.yaml")
    assert "device" not in (tmp_path / "config.yaml").read_text()


def test_legacy_training_execution_keys_are_read_as_execution():
    raw = {
        "data": {"source": "a", "target": "b"},
        "training": {"folds": 3, "device": "cpu", "n_jobs": 2, "cache_dir": "/c"},
    }
    config = RunConfig.from_dict(raw)
    assert config.training.folds == 3
    assert (config.execution.device, config.execution.n_jobs) == ("cpu", 2)
    assert config.execution.cache_dir == "/c"


def test_resolved_config_replays_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = _config().resolved()
    assert resolved.data.source == str(tmp_path / "cohort")


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


def _without_bn_recalibration(path):
    """Drop ``training.bn_recalibration`` from a written config (as brainmaps <= 0.3 wrote it)."""
    raw = yaml.safe_load(path.read_text())
    del raw["training"]["bn_recalibration"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw


def test_a_run_folders_own_old_config_reads_without_bn_recalibration(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = run_dir / "config.yaml"
    _config().to_yaml(saved)
    raw = _without_bn_recalibration(saved)
    (run_dir / "cohort.tsv").write_text("subject\n")  # written beside it by brainmaps train
    with pytest.warns(BrainmapsWarning, match=r"run[/\\]config.yaml was written by an older"):
        assert load_config(saved).training.bn_recalibration is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per file
        assert load_config(saved).training.bn_recalibration is False
        # the same keys in a user's own file, or built from a dict, take the default
        mine = tmp_path / "config.yaml"  # no cohort.tsv beside it: not a run folder
        mine.write_text(saved.read_text())
        assert load_config(mine).training.bn_recalibration is True
        assert load_config(saved, saved=False).training.bn_recalibration is True
        assert RunConfig.from_dict(raw).training.bn_recalibration is True
        # a saved config that has the key keeps its value, without a warning
        _config(bn_recalibration=True).to_yaml(saved)
        assert load_config(saved).training.bn_recalibration is True
    with pytest.warns(BrainmapsWarning, match="old.yaml"):
        assert RunConfig.from_dict(raw, "old.yaml", saved=True).training.bn_recalibration is False


def test_open_run_and_the_resume_check_read_an_old_run_as_trained(tiny_run, tmp_path):
    from brainmaps.run import RunLayout, open_run
    from brainmaps.training.run import _check_run_folder

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    assert open_run(run_dir).config.training.bn_recalibration is True  # written with the key
    _without_bn_recalibration(run_dir / "config.yaml")
    with pytest.warns(BrainmapsWarning, match="bn_recalibration: False"):
        config = open_run(run_dir).config
    assert config.training.bn_recalibration is False
    # resuming with the new default would train the remaining folds otherwise: refused
    new = config.replace(training=dataclasses.replace(config.training, bn_recalibration=True))
    with pytest.raises(ConfigError, match=r"differs in training\.bn_recalibration"):
        _check_run_folder(new.replace(out=str(run_dir)), RunLayout(run_dir))
    _check_run_folder(config.replace(out=str(run_dir)), RunLayout(run_dir))  # as trained
