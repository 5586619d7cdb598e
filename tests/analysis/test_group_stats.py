"""Per-filter group comparison with Benjamini-Hochberg FDR: known answers and nulls."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainmaps.analysis.group_stats import benjamini_hochberg, compare_groups, count_larger
from brainmaps.exceptions import ConfigError, ShapeError

PLANTED = {2: +1.5, 7: -1.5, 15: +2.0}  # filter -> shift of group "b" over group "a"


def _planted(seed: int = 1, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(2 * n, 20))
    groups = np.array(["a"] * n + ["b"] * n)
    for f, shift in PLANTED.items():
        values[n:, f] += shift
    return values, groups


@pytest.mark.parametrize("test", ["mannwhitney", "ttest"])
def test_planted_filters_are_found_with_the_right_direction(test):
    values, groups = _planted()
    df = compare_groups(values, groups, test=test)
    assert list(df.columns) == [
        "filter", "statistic", "p", "q", "mean_a", "mean_b", "larger_in", "significant"
    ]  # fmt: skip
    assert set(df.loc[df["significant"], "filter"]) == set(PLANTED)
    for f, shift in PLANTED.items():
        assert df.loc[f, "larger_in"] == ("b" if shift > 0 else "a")
    assert count_larger(df) == {"n_filters": 20, "n_significant": 3, "a": 1, "b": 2}


def test_planted_filters_are_found_whatever_the_seed():
    for seed in range(6):
        values, groups = _planted(seed)
        significant = compare_groups(values, groups).query("significant")["filter"]
        assert set(PLANTED) <= set(significant)
        assert len(significant) <= len(PLANTED) + 1  # FDR 5%: rarely a false discovery


def test_null_data_gives_almost_no_significant_filters():
    rng = np.random.default_rng(123)
    groups = np.repeat(["x", "y"], 25)
    runs_with_hits = 0
    for _ in range(60):
        df = compare_groups(rng.normal(size=(50, 20)), groups, test="mannwhitney")
        runs_with_hits += bool(df["significant"].any())
    # Under the complete null BH controls the family-wise error at alpha: ~3 of 60.
    assert runs_with_hits <= 8


def test_q_values_match_a_hand_computed_benjamini_hochberg():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    # sorted: .005 .01 .03 .04 .5 -> p*m/rank: .025 .025 .05 .05 .5 -> running min from top
    np.testing.assert_allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.5])


def test_q_is_at_least_p_and_monotone_in_p():
    values, groups = _planted(seed=4)
    df = compare_groups(values, groups, test="ttest")
    assert np.all(df["q"] >= df["p"] - 1e-15)
    ordered = df.sort_values("p")["q"].to_numpy()
    assert np.all(np.diff(ordered) >= -1e-15)


def test_statistics_are_scipy_s_with_group_a_first():
    values, groups = _planted(seed=1)
    a, b = values[groups == "a", 7], values[groups == "b", 7]
    t = compare_groups(values, groups, test="ttest").loc[7]
    assert t["statistic"] == pytest.approx(stats.ttest_ind(a, b).statistic)
    assert t["p"] == pytest.approx(stats.ttest_ind(a, b).pvalue)
    u = compare_groups(values, groups, test="mannwhitney").loc[7]
    assert u["statistic"] == pytest.approx(stats.mannwhitneyu(a, b).statistic)
    assert u["mean_a"] == pytest.approx(a.mean())


def test_class_order_and_constant_filters():
    values = np.zeros((6, 2))
    values[:, 1] = [1, 2, 3, 7, 8, 9]
    df = compare_groups(values, [1, 1, 1, 0, 0, 0], test="ttest", classes=[1, 0])
    assert list(df.columns[4:6]) == ["mean_1", "mean_0"]
    assert df.loc[0, "p"] == 1.0 and df.loc[0, "larger_in"] == ""
    assert df.loc[1, "larger_in"] == "0"
    assert not df.loc[0, "significant"]


def test_count_larger_sums_over_rows_of_several_tables():
    df = pd.DataFrame(
        {
            "mean_m": [0, 0, 0, 0],
            "mean_w": [0, 0, 0, 0],
            "larger_in": ["m", "w", "m", "m"],
            "significant": [True, True, False, True],
        }
    )
    assert count_larger(df) == {"n_filters": 4, "n_significant": 3, "m": 2, "w": 1}
    with pytest.raises(ConfigError, match="count_larger"):
        count_larger(df.drop(columns="mean_w"))


def test_bad_inputs_raise_clear_errors():
    values, groups = _planted()
    with pytest.raises(ConfigError, match="test must be"):
        compare_groups(values, groups, test="wilcoxon")
    with pytest.raises(ConfigError, match="alpha"):
        compare_groups(values, groups, alpha=5)
    with pytest.raises(ShapeError, match="2D"):
        compare_groups(values[:, 0], groups)
    with pytest.raises(ShapeError, match="one label per row"):
        compare_groups(values, groups[:-1])
    with pytest.raises(ConfigError, match="exactly two"):
        compare_groups(values, np.arange(len(groups)) % 3)
    with pytest.raises(ConfigError, match="at least 2"):
        compare_groups(values[:31], groups[:31])
    bad = values.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        compare_groups(bad, groups)
    with pytest.raises(ConfigError, match="p-values"):
        benjamini_hochberg([0.1, 1.5])


def test_module_does_not_import_torch():
    code = "import sys, brainmaps.analysis.group_stats; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
