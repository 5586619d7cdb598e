"""Repeated cross-validation (``training.repeats``): splits, layout, metrics, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from brainmaps.evaluation.splitters import make_folds
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.run.folder import open_run
from brainmaps.run.layout import RunLayout
from brainmaps.training.repeats import REPEAT_SEED_STEP, repeat_config
from brainmaps.training.run import load_run_cohort, train_run
from tiny import tiny_config


@pytest.fixture(scope="module")
def repeated(tiny_cohort, tmp_path_factory):
    """Two repeats of a 3-fold run, two epochs, an inner validation split (nothing here
    asserts what the models learnt)."""
    base = tmp_path_factory.mktemp("repeats")
    config = tiny_config(
        tiny_cohort, base / "run", base / "cache", epochs=2, val_fraction=0.1, repeats=2
    )
    return config, train_run(config, progress=False)


def _folds(path) -> pd.DataFrame:
    return pd.read_csv(
        path, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False
    )


def _test_sets(folds: pd.DataFrame) -> list[frozenset]:
    tests = folds[folds["role"] == "test"]
    return sorted((frozenset(p["subject"]) for _, p in tests.groupby("fold")), key=sorted)


def test_layout_of_a_repeated_run(repeated):
    _, result = repeated
    layout = RunLayout(result.out)
    assert layout.existing_repeats() == [1]
    rep = layout.repeat(1)
    assert rep.root == result.out / "repeats" / "repeat-1"
    for path in (rep.folds, rep.predictions, rep.metrics, layout.metrics_repeats):
        assert path.is_file(), path
    for k in range(3):
        for path in (rep.checkpoint(k), rep.fold_predictions(k), rep.fold_history(k)):
            assert path.is_file(), path
    assert not (rep.root / "config.yaml").exists()  # a repeat is not a run of its own


def test_repeat_split_differs_and_is_reproducible(repeated, tiny_cohort):
    config, result = repeated
    first = _folds(result.out / "folds.tsv")
    second = _folds(RunLayout(result.out).repeat(1).folds)
    assert _test_sets(first) != _test_sets(second)
    # the documented seed: repeat r's split is make_folds with seed + r * REPEAT_SEED_STEP
    cohort = load_run_cohort(config)
    seed = config.training.seed + REPEAT_SEED_STEP
    assert repeat_config(config, 1).training.seed == seed
    expected = make_folds(cohort.subjects, cohort.labels, n_folds=3, seed=seed, task=cohort.task)
    tests = second[second["role"] == "test"].set_index("subject")["fold"]
    assert np.array_equal(tests.loc[cohort.subjects].to_numpy(), expected)
    # its inner validation split is its own (not repeat 0's)
    val = [frozenset(f.loc[f["role"] == "val", "subject"]) for f in (first, second)]
    assert val[0] != val[1]


def test_each_repeat_partitions_the_subjects_without_leakage(repeated):
    _, result = repeated
    layout = RunLayout(result.out)
    subjects = set(_folds(layout.folds)["subject"])
    for r in (0, 1):
        folds = _folds(layout.repeat(r).folds)
        tests = folds[folds["role"] == "test"]
        assert tests["subject"].is_unique and set(tests["subject"]) == subjects
        for k, part in folds.groupby("fold"):
            test = set(part.loc[part["role"] == "test", "subject"])
            assert test and not test & set(part.loc[part["role"] != "test", "subject"])
            assert (part["role"] == "val").any()
            predicted = _folds(layout.repeat(r).fold_predictions(k))
            assert set(predicted["subject"]) == test
        predictions = _folds(layout.repeat(r).predictions)
        assert predictions["subject"].is_unique and set(predictions["subject"]) == subjects


def test_repeat_models_are_seeded_by_their_repeat(repeated):
    config, result = repeated
    _, meta0 = load_checkpoint(result.out / "fold-0" / "model.pt")
    _, meta1 = load_checkpoint(RunLayout(result.out).repeat(1).checkpoint(0))
    assert meta0["seed"] == config.training.seed
    assert meta1["seed"] == config.training.seed + REPEAT_SEED_STEP


def test_metrics_tables(repeated):
    _, result = repeated
    layout = RunLayout(result.out)
    metrics = pd.read_csv(layout.metrics, sep="\t", dtype={"fold": str})
    assert list(metrics["fold"]) == ["0", "1", "2", "mean", "std"]
    pd.testing.assert_frame_equal(metrics, result.metrics, check_dtype=False)
    pooled = pd.read_csv(layout.metrics_repeats, sep="\t", dtype={"fold": str, "repeat": str})
    assert list(pooled["repeat"]) == ["0"] * 3 + ["1"] * 3 + ["all", "all"]
    assert list(pooled["fold"]) == ["0", "1", "2"] * 2 + ["mean", "std"]
    assert list(pooled.columns) == ["repeat", *metrics.columns]
    rep1 = pd.read_csv(layout.repeat(1).metrics, sep="\t", dtype={"fold": str})
    folds = pd.concat([metrics.iloc[:3], rep1.iloc[:3]])
    for column in ("accuracy", "roc_auc", "n_test"):
        values = folds[column].to_numpy(dtype=float)
        assert np.allclose(pooled[column].iloc[:6], values)
        assert np.isclose(pooled[column].iloc[6], values.mean())
        assert np.isclose(pooled[column].iloc[7], values.std(ddof=1))
    assert len(result.repeat_metrics) == 8


def test_downstream_readers_see_repeat_zero_only(repeated):
    _, result = repeated
    run = open_run(result.out)
    assert run.n_folds == 3
    assert set(run.fold_models()) == {0, 1, 2}
    assert all(p.parent.parent == result.out for p in run.checkpoints())
    folds = _folds(result.out / "folds.tsv")
    assert run.folds[["fold", "subject", "role"]].equals(folds[["fold", "subject", "role"]])
    predictions = _folds(result.out / "predictions.tsv")
    assert predictions["subject"].is_unique and len(predictions) == len(run.table)
    tested = folds[folds["role"] == "test"].set_index("subject")["fold"]
    assert (predictions.set_index("subject")["fold"] == tested.loc[predictions["subject"]]).all()
    assert np.array_equal(run.table["test_fold"], tested.loc[run.table["subject"]].to_numpy())


def test_resume_skips_finished_repeat_folds(repeated, tmp_path):
    config, result = repeated
    copy = tmp_path / "run"
    shutil.copytree(result.out, copy)
    rep = RunLayout(copy).repeat(1)
    rep.checkpoint(1).unlink()
    (copy / "metrics_repeats.tsv").unlink()
    before = {k: rep.checkpoint(k).stat().st_mtime_ns for k in (0, 2)}
    first = (copy / "fold-0" / "model.pt").stat().st_mtime_ns
    again = train_run(config.replace(out=str(copy)), progress=False)
    assert again.resumed_folds == [0, 1, 2]
    assert again.resumed_repeat_folds == [(1, 0), (1, 2)]
    assert {k: rep.checkpoint(k).stat().st_mtime_ns for k in (0, 2)} == before
    assert (copy / "fold-0" / "model.pt").stat().st_mtime_ns == first
    assert rep.checkpoint(1).is_file()
    # the retrained fold used the same seed: the pooled metrics are reproduced
    pd.testing.assert_frame_equal(again.repeat_metrics, result.repeat_metrics)


def test_one_repeat_writes_no_repeat_files(tiny_run):
    assert not (tiny_run / "repeats").exists()
    assert not (tiny_run / "metrics_repeats.tsv").exists()
    assert RunLayout(tiny_run).existing_repeats() == []
    assert RunLayout(tiny_run).repeat(0).root == tiny_run


@pytest.mark.parametrize(
    ("settings", "why"),
    [({"cv": "leave-one-site-out"}, "one fold per site"), ({"folds_file": "F"}, "folds file")],
)
def test_repeats_of_a_fixed_split_are_refused(tiny_cohort, tmp_path, settings, why):
    if "folds_file" in settings:
        subjects = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t")["participant_id"]
        path = tmp_path / "folds.tsv"
        pd.DataFrame({"subject": subjects, "fold": np.arange(len(subjects)) % 3}).to_csv(
            path, sep="\t", index=False
        )
        settings = {"folds_file": str(path)}
    config = tiny_config(tiny_cohort, tmp_path / "r", tmp_path / "c", repeats=3, **settings)
    with pytest.raises(ConfigError, match=rf"--repeats 3.*{why}"):
        train_run(config, progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything is written
