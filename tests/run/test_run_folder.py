"""The run folder's owner: one writer at a time, folds that are really done, no mixed or
half-written runs, option records for explain, validation before the first write."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from brainmaps.cli.main import main
from brainmaps.run import RunLayout, RunLockedError, StageOptionsError, open_run, run_lock
from brainmaps.run.config import ExecutionConfig
from brainmaps.training.run import TrainingDivergedError, train_run
from tiny import tiny_config


def test_layout_names_every_documented_path(tmp_path):
    layout = RunLayout(tmp_path / "run")
    assert layout.checkpoint(3) == tmp_path / "run" / "fold-3" / "model.pt"
    assert layout.subject_map("gradient", "01", "a").name == "sub-01_ses-a.nii.gz"
    assert layout.group_map("lrp", "conjoined").name == "mean_conjoined.nii.gz"
    assert layout.analysis("overlap") == tmp_path / "run" / "analysis" / "overlap.tsv"
    assert layout.baselines("comparison").parent.name == "baselines"
    assert layout.existing_checkpoints() == {}
    assert layout.map_methods() == []


def test_a_second_writer_gets_a_clear_error(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with run_lock(lock):
        with pytest.raises(RunLockedError, match=r"being written by pid \d+"):
            with run_lock(lock):
                pass
    assert not lock.exists()  # the holder removes it
    with run_lock(lock):  # released when the holder is done
        pass


def test_train_on_a_locked_folder_writes_nothing(tiny_cohort, tmp_path):
    config = tiny_config(tiny_cohort, tmp_path / "run", tmp_path / "cache", epochs=1)
    with run_lock(RunLayout(tmp_path / "run").lock):
        with pytest.raises(RunLockedError, match="brainmaps train"):
            train_run(config)
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.fixture(scope="module")
def short_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("short")
    config = tiny_config(tiny_cohort, base / "run", base / "cache", epochs=2)
    train_run(config)
    return config


def test_a_broken_checkpoint_is_not_a_finished_fold(short_run, tmp_path):
    config = short_run.replace(out=str(tmp_path / "run"))
    shutil.copytree(short_run.out, config.out)
    layout = RunLayout(config.out)
    layout.checkpoint(1).write_bytes(b"x" * 100)
    result = train_run(config)
    assert result.resumed_folds == [0, 2]
    open_run(config.out).fold_models()  # every fold has a loadable model again
    assert len(layout.checkpoint(1).read_bytes()) > 100


def test_nan_predictions_are_not_a_finished_fold(short_run, tmp_path):
    config = short_run.replace(out=str(tmp_path / "run"))
    shutil.copytree(short_run.out, config.out)
    path = RunLayout(config.out).fold_predictions(2)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table.loc[0, table.columns[table.columns.str.startswith("p_")][0]] = "nan"
    table.to_csv(path, sep="\t", index=False)
    assert train_run(config).resumed_folds == [0, 1]


def test_execution_settings_may_change_on_resume(short_run, tmp_path):
    config = short_run.replace(out=str(tmp_path / "run"))
    shutil.copytree(short_run.out, config.out)
    moved = config.replace(
        execution=ExecutionConfig(device="cpu", n_jobs=2, cache_dir=config.execution.cache_dir)
    )
    assert train_run(moved).resumed_folds == [0, 1, 2]
    recorded = yaml.safe_load(RunLayout(config.out).execution.read_text())
    assert (recorded["device"], recorded["n_jobs"]) == ("cpu", 2)


def test_config_source_is_absolute_so_replay_works_elsewhere(short_run, tmp_path):
    raw = yaml.safe_load(RunLayout(short_run.out).config.read_text())
    assert raw["data"]["source"].startswith("/")


def test_a_diverging_run_stops_with_a_clear_error(tiny_cohort, tmp_path, capsys):
    cache = tmp_path / "cache"
    args = [
        "train", str(tiny_cohort), "--target", "group", "--out", str(tmp_path / "run"),
        "--grid", "22x26x22", "--folds", "3", "--epochs", "2", "--lr", "1e9",
        "--cache-dir", str(cache), "--no-progress",
    ]  # fmt: skip
    for _ in range(2):  # the re-run gives the same clear error, not a traceback
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "diverged" in err and "--lr" in err
        assert not RunLayout(tmp_path / "run").checkpoint(0).exists()


def test_diverged_fold_error_names_the_fold(monkeypatch, tiny_cohort, tmp_path):
    import brainmaps.training.fold as run_module  # the fold training calls train_model

    real = run_module.train_model

    def nan_history(*args, **kwargs):
        result = real(*args, **kwargs)
        result.history.loc[1:, "train_loss"] = np.nan
        return result

    monkeypatch.setattr(run_module, "train_model", nan_history)
    config = tiny_config(tiny_cohort, tmp_path / "run", tmp_path / "cache", epochs=2)
    with pytest.raises(TrainingDivergedError, match=r"fold 0.*epoch 2"):
        train_run(config)
    assert RunLayout(config.out).existing_checkpoints() == {}


def test_a_bad_grid_fails_before_anything_is_written(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train", str(tiny_cohort), "--target", "group", "--out", str(out), "--grid", "4x4x4",
        "--folds", "3", "--cache-dir", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 2
    assert "at least 22 voxels" in capsys.readouterr().err
    assert not out.exists()  # nothing written, not even the folder
    args[args.index("4x4x4")] = "22x26x22"
    args += ["--epochs", "1"]
    assert main(args) == 0  # the corrected command is not refused as another config


def test_explain_records_options_and_refuses_a_change(short_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(short_run.out, run_dir)
    base = ["explain", str(run_dir), "--methods", "gradient", "--quiet"]
    assert main(base) == 0
    record = yaml.safe_load(RunLayout(run_dir).stage_record("explain-gradient").read_text())
    assert record["options"]["target"] == "predicted"
    assert main(base) == 0  # same options: resumes
    assert main([*base, "--target", "true"]) == 2
    err = capsys.readouterr().err
    assert "target: 'predicted' -> 'true'" in err and "--overwrite" in err
    assert main([*base, "--target", "true", "--overwrite"]) == 0
    manifest = pd.read_csv(RunLayout(run_dir).maps_manifest("gradient"), sep="\t", dtype=str)
    assert (manifest["explained"] == manifest["label"]).all()


def test_hires_cam_maps_made_before_the_auto_default_are_not_mixed_with_new_ones(
    short_run, tmp_path, capsys
):
    """Maps recorded without a layer were taken at the last block; the default is now
    ``"auto"``, so resuming them would mix two layers in one folder."""
    run_dir = tmp_path / "run"
    shutil.copytree(short_run.out, run_dir)
    base = ["explain", str(run_dir), "--methods", "hires_cam,grad_cam", "--quiet"]
    assert main(base) == 0
    layout = RunLayout(run_dir)
    record = yaml.safe_load(layout.stage_record("explain-hires_cam").read_text())
    assert record["options"]["options"] == {"layer": "auto"}
    grad_cam = yaml.safe_load(layout.stage_record("explain-grad_cam").read_text())
    assert grad_cam["options"]["options"] == {}  # Grad-CAM's default did not change
    record["options"]["options"] = {}  # as an older brainmaps wrote it
    layout.stage_record("explain-hires_cam").write_text(yaml.safe_dump(record))
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "layer" in err and "auto" in err and "--overwrite" in err


def test_stage_option_error_is_a_config_error():
    assert issubclass(StageOptionsError, Exception)
