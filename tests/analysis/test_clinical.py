"""Scores against clinical measures: hand-made data with known answers, synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis.clinical import (
    COLUMNS,
    clinical_table,
    cohens_d,
    linear_score,
    permutation_test,
)
from brainmaps.exceptions import CohortError, ConfigError


def test_linear_score_is_the_log_odds():
    assert linear_score([0.5])[0] == pytest.approx(0.0)
    assert linear_score([0.8])[0] == pytest.approx(np.log(4.0))
    assert np.isfinite(linear_score([0.0, 1.0])).all()  # clipped


def test_cohens_d_by_hand():
    a, b = np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0])
    pooled = np.sqrt((2 * 4.0 + 2 * 1.0) / 4)
    assert cohens_d(a, b) == pytest.approx((4.0 - 2.0) / pooled)
    assert np.isnan(cohens_d([1.0], b))


def test_permutation_p_values():
    rng = np.random.default_rng(0)
    far = permutation_test(rng.normal(3, 1, 30), rng.normal(0, 1, 30), 999, seed=1)
    assert far == pytest.approx(1 / 1000)  # never 0
    same = permutation_test(np.ones(5), np.ones(5), 99)
    assert same == 1.0
    assert permutation_test([1, 2, 3], [2, 3, 9], 500, seed=3) == permutation_test(
        [1, 2, 3], [2, 3, 9], 500, seed=3
    )
    with pytest.raises(ConfigError, match="n_permutations"):
        permutation_test([1, 2], [3, 4], 0)


def test_a_null_subgroup_gives_uniform_p_values():
    """No false positives by construction: over 300 null data sets, about 5 % below 0.05."""
    rng = np.random.default_rng(11)
    p = np.array(
        [
            permutation_test(rng.normal(size=20), rng.normal(size=25), 199, seed=i)
            for i in range(300)
        ]
    )
    assert 0.02 <= np.mean(p < 0.05) <= 0.09
    assert 0.4 <= np.median(p) <= 0.6


def frame_with_known_answers(n=120, seed=0):
    rng = np.random.default_rng(seed)
    label = np.where(np.arange(n) % 2, "patient", "control")
    age = rng.uniform(20, 80, n)
    site = rng.choice(["a", "b", "c"], n)
    score = 2.0 * (label == "patient") + 0.05 * age + rng.normal(0, 0.3, n)
    mmse = (
        np.where(label == "patient", 24, 29) - 1.5 * (score - score.mean()) + rng.normal(0, 0.5, n)
    )
    progression = np.where(score > 3.5, "converter", "stable")
    return pd.DataFrame(
        {
            "label": label,
            "score": score,
            "age": age,
            "site": site,
            "mmse": mmse,
            "batch": rng.choice(["A", "B"], n),
            "progression": np.where(label == "patient", progression, None),
        }
    )


def test_clinical_table_finds_what_was_planted():
    frame = frame_with_known_answers()
    table = clinical_table(
        frame,
        measures=["mmse"],
        covariates=["age", "site"],
        subgroups=["batch", "progression"],
        n_permutations=2000,
    )
    assert list(table.columns) == COLUMNS
    rho = table[(table["analysis"] == "spearman") & (table["within"] == "all")]
    assert rho["estimate"].iloc[0] < -0.8 and rho["p_value"].iloc[0] < 1e-10
    within = table[(table["analysis"] == "spearman") & (table["within"] == "patient")]
    assert within["estimate"].iloc[0] < -0.5  # not only the class difference
    ols = table[table["analysis"] == "ols"].set_index(["variable", "level"])
    cls = ols.loc[("class", "patient")]
    assert cls["estimate"] == pytest.approx(2.0, abs=0.25)
    assert cls["ci_low"] < cls["estimate"] < cls["ci_high"]
    assert ols.loc[("age", ""), "estimate"] == pytest.approx(0.05, abs=0.01)
    assert set(ols.index.get_level_values("variable")) >= {"Intercept", "class", "age", "site"}
    perm = table[table["analysis"] == "permutation"].set_index("variable")
    assert perm.loc["progression", "level"] == "converter vs stable"
    assert perm.loc["progression", "p_value"] < 0.01 and perm.loc["progression", "effect_size"] > 1
    assert perm.loc["progression", "n"] == 60  # controls have no progression: left out
    assert perm.loc["batch", "p_value"] > 0.01
    assert perm.loc["progression", "p_fdr"] == pytest.approx(perm.loc["progression", "p_value"])
    sites = table[(table["analysis"] == "spearman")]
    assert (sites["p_fdr"] >= sites["p_value"] - 1e-12).all()  # adjusted upward
    assert table.loc[table["analysis"] == "ols", "p_fdr"].isna().all()


def test_clinical_table_refuses_bad_columns():
    frame = frame_with_known_answers(20)
    with pytest.raises(CohortError, match="moca"):
        clinical_table(frame, measures=["moca"])
    with pytest.raises(CohortError, match="1 level"):
        clinical_table(frame.assign(batch="A"), subgroups=["batch"])
    with pytest.raises(CohortError, match="at least 3"):
        clinical_table(frame.assign(mmse=np.nan), measures=["mmse"])
    with pytest.raises(ConfigError, match="give measures"):
        clinical_table(frame)


def test_synthetic_clinical_measures_follow_the_planted_effect(tmp_path):
    """MMSE falls with each patient's effect strength (Spearman -0.90 among the 20 patients
    of this cohort), and that strength is the one the image simulation applied: the same
    subject simulated as a control differs from its patient image by exactly that factor
    at the centre of the planted regions."""
    from scipy.stats import spearmanr

    from brainmaps.data.synthetic import SynthConfig, make_synthetic_cohort, simulate_subject

    out = make_synthetic_cohort(
        tmp_path / "clin", n_subjects=40, seed=0, voxel_size=4.0, clinical=True, progress=False
    )
    people = pd.read_csv(out / "participants.tsv", sep="\t")
    truth = pd.read_csv(out / "ground_truth_clinical.tsv", sep="\t")
    assert {"mmse", "progression", "batch"} <= set(people.columns)
    both = people.merge(truth, on=["participant_id", "group"])
    patients = both[both["group"] == "patient"]
    assert (both.loc[both["group"] == "control", "effect_strength"] == 0).all()
    assert spearmanr(patients["mmse"], patients["effect_strength"])[0] < -0.7
    assert people["mmse"].between(0, 30).all()
    assert set(patients["progression"]) == {"converter", "stable"}
    # 2 mm: the flat centre of each region holds whole interpolation neighbourhoods
    config = SynthConfig(n_subjects=40, seed=0, voxel_size=2.0, clinical=True, noise=0.0)
    rows = people.to_dict("records")
    for i in patients.index[:4]:  # the largest drop is where the effect's weight is 1
        as_patient = simulate_subject(config, rows[i], i).astype(float)
        as_control = simulate_subject(config, {**rows[i], "group": "control"}, i).astype(float)
        keep = as_control > 200
        drop = np.max(1 - as_patient[keep] / as_control[keep])
        assert drop == pytest.approx(truth.loc[i, "effect_strength"], abs=0.005)
    plain = make_synthetic_cohort(
        tmp_path / "plain", n_subjects=40, seed=0, voxel_size=4.0, progress=False
    )
    first = "sub-0001/anat/sub-0001_T1w.nii.gz"
    assert (out / first).read_bytes() == (plain / first).read_bytes()  # images unchanged
    assert not (plain / "ground_truth_clinical.tsv").exists()
