"""The shared retraining pieces of ROAR and the data randomisation test: the folds they
accept and the options with which a fold is trained again."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from brainmaps.exceptions import ConfigError
from brainmaps.run import RunLayout
from brainmaps.run.folder import open_run
from brainmaps.steps import roar as roar_step
from brainmaps.training.retrain import check_folds, fold_training_options


def test_check_folds_reads_integers_as_check_int_does_and_names_the_run(tiny_run):
    run = open_run(tiny_run)
    assert check_folds(run, None) == [0, 1, 2]
    assert check_folds(run, [2, np.int64(0), 2.0, 0]) == [0, 2]  # sorted, unique
    for bad in (3, -1, True, 0.5, "1"):
        with pytest.raises(ConfigError, match=r"folds: fold .* is not a fold of .* 0\.\.2"):
            check_folds(run, [bad])
    with pytest.raises(ConfigError, match=r"folds_subset is empty.*folds_subset=\[0\]"):
        check_folds(run, [], name="folds_subset")


def test_fold_training_options_are_the_runs_with_the_fold_seed(tiny_run):
    run = open_run(tiny_run)
    t = run.config.training
    options = fold_training_options(run, 2, random_state=5)
    assert options == {"epochs": t.epochs, "lr": t.lr, "batch_size": t.batch_size,
                       "seed": t.seed + 2 + 5, "amp": t.amp,
                       "num_workers": run.config.execution.num_workers,
                       "bn_recalibration": t.bn_recalibration}  # fmt: skip
    assert fold_training_options(run, 0, epochs=1)["epochs"] == 1


def test_roar_refuses_folds_the_run_lacks_before_any_work(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(ConfigError, match=r"folds: fold 3 is not a fold of .* 0\.\.2"):
        roar_step.roar_run(run_dir, ["gradient"], folds=[0, 3], progress=False)
    with pytest.raises(ConfigError, match="folds is empty"):
        roar_step.roar_run(run_dir, ["gradient"], folds=[], progress=False)
    assert not RunLayout(run_dir).stage_record("roar").exists()
