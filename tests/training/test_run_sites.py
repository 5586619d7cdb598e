"""Training with leave-sites-out folds: no site in two folds, metrics per test site."""

from __future__ import annotations

import pandas as pd
import pytest

from brainmaps.data.synthetic import SynthConfig, draw_participants, make_synthetic_cohort
from brainmaps.exceptions import CohortError, ConfigError
from brainmaps.run.config import TrainingConfig
from brainmaps.training.run import train_run
from tiny import tiny_config


@pytest.fixture(scope="module")
def site_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("sites") / "synth"
    return make_synthetic_cohort(
        out, n_subjects=36, seed=2, voxel_size=4.0, n_sites=4, effect_size=0.5, progress=False
    )


def test_leave_sites_out_run(site_cohort, tmp_path):
    config = tiny_config(
        site_cohort, tmp_path / "run", tmp_path / "cache", epochs=2, cv="leave-sites-out", folds=2
    )
    result = train_run(config, progress=False)
    cohort = pd.read_csv(tmp_path / "run" / "cohort.tsv", sep="\t", dtype=str)
    assert (cohort.groupby("site")["test_fold"].nunique() == 1).all()
    roles = pd.read_csv(tmp_path / "run" / "folds.tsv", sep="\t", dtype=str)
    test_sites = roles[roles["role"] == "test"].merge(cohort[["subject", "site"]], on="subject")
    train_sites = roles[roles["role"] != "test"].merge(cohort[["subject", "site"]], on="subject")
    for k in ("0", "1"):
        tested = set(test_sites.loc[test_sites["fold"] == k, "site"])
        trained = set(train_sites.loc[train_sites["fold"] == k, "site"])
        assert tested and not tested & trained, (k, tested, trained)
    per_site = pd.read_csv(tmp_path / "run" / "metrics_sites.tsv", sep="\t")
    assert sorted(per_site["site"]) == ["site1", "site2", "site3", "site4"]
    assert per_site["n_test"].sum() == len(cohort)
    assert {"accuracy", "roc_auc"} <= set(per_site.columns)
    assert len(result.metrics) == 2 + 2  # two folds, mean, std
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "cv: leave-sites-out" in saved
    # a second run on the same folds: --folds-file takes a run folder (its cohort.tsv)
    again = tiny_config(
        site_cohort,
        tmp_path / "same",
        tmp_path / "cache",
        epochs=1,
        folds_file=str(tmp_path / "run"),
    )
    train_run(again, progress=False)
    second = pd.read_csv(tmp_path / "same" / "cohort.tsv", sep="\t", dtype=str)
    assert second.set_index("subject")["test_fold"].equals(cohort.set_index("subject")["test_fold"])
    from brainmaps.reports import build_report

    html = build_report(tmp_path / "run").read_text()
    assert "leave sites out: whole sites per test fold; every site in one test fold" in html
    assert "per fold and test site (no site is in the training data" in html


def test_leave_one_site_out_and_refusals(site_cohort, tmp_path):
    config = tiny_config(
        site_cohort, tmp_path / "r1", tmp_path / "cache", epochs=1, cv="leave-one-site-out"
    )
    train_run(config, progress=False)
    cohort = pd.read_csv(tmp_path / "r1" / "cohort.tsv", sep="\t", dtype=str)
    assert cohort.groupby("test_fold")["site"].nunique().eq(1).all()
    assert cohort["test_fold"].nunique() == 4
    too_many = tiny_config(
        site_cohort, tmp_path / "r2", tmp_path / "cache", cv="leave-sites-out", folds=5
    )
    with pytest.raises(CohortError, match="from 4 sites"):
        train_run(too_many, progress=False)
    assert not (tmp_path / "r2" / "config.yaml").exists()  # refused before writing


def test_single_site_cohort_is_refused(tiny_cohort, tmp_path):
    config = tiny_config(
        tiny_cohort, tmp_path / "r", tmp_path / "cache", cv="leave-sites-out", folds=2
    )
    with pytest.raises(CohortError, match="at least 2 sites"):
        train_run(config, progress=False)


def test_cv_option_is_validated():
    with pytest.raises(ConfigError, match=r"training\.cv"):
        TrainingConfig(cv="by-hospital")
    with pytest.raises(ConfigError, match="folds-file"):
        TrainingConfig(cv="file")
    with pytest.raises(ConfigError, match="drop --cv or --folds-file"):
        TrainingConfig(cv="leave-sites-out", folds_file="f.tsv")
    assert TrainingConfig(folds_file="f.tsv").cv == "file"


def test_site_confound_moves_subjects_to_their_group_sites():
    base = SynthConfig(n_subjects=200, n_sites=4)
    plain = draw_participants(base)
    same = draw_participants(SynthConfig(n_subjects=200, n_sites=4, site_confound=0.0))
    pd.testing.assert_frame_equal(plain, same)
    full = draw_participants(SynthConfig(n_subjects=200, n_sites=4, site_confound=1.0))
    controls = set(full.loc[full["group"] == "control", "site"])
    assert controls == {"site1", "site2"}
    assert set(full.loc[full["group"] == "patient", "site"]) == {"site3", "site4"}
    half = draw_participants(SynthConfig(n_subjects=200, n_sites=4, site_confound=0.5))
    share = (half.loc[half["group"] == "control", "site"].isin(["site1", "site2"])).mean()
    assert 0.6 < share < 0.9  # 0.5 moved + half of the rest by chance: about 0.75
    pd.testing.assert_frame_equal(plain.drop(columns="site"), full.drop(columns="site"))
    with pytest.raises(ConfigError, match="at least 2 sites"):
        SynthConfig(site_confound=0.5)
    with pytest.raises(ConfigError, match="site_confound"):
        SynthConfig(n_sites=2, site_confound=1.5)
