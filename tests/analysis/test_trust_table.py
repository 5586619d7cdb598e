"""The trust table from hand-written source tables with known answers (torch-free)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis.trust import COLUMNS, LOCALISATION_BOUND, trust_table
from brainmaps.exceptions import ConfigError


def _localisation(aucs: dict) -> pd.DataFrame:
    rows = []
    for method, auc in aucs.items():
        rows += [
            {"method": method, "map": "control", "roc_auc": 0.51},
            {"method": method, "map": "conjoined", "roc_auc": auc},
            {"method": method, "map": "subjects", "roc_auc": 0.52},
        ]
    return pd.DataFrame(rows)


def _faithfulness(areas: dict) -> pd.DataFrame:
    """``areas``: method -> (deletion, insertion); random areas 0.66 and 0.6."""
    rows = [
        {"method": m, "mode": mode, "fill": "blur", "auc": auc, "auc_random": rnd,
         "auc_std": 0.05, "n_subjects": 12}
        for m, pair in {**areas, "random": (0.66, 0.6)}.items()
        for mode, auc, rnd in zip(("deletion", "insertion"), pair, (0.66, 0.6), strict=True)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _sanity(rhos: dict, bound: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        [{"method": m, "n_subjects": 6, "n_stages": 4, "spearman_abs": r, "spearman": r,
          "ssim": 0.2, "bound": bound, "passed": r <= bound} for m, r in rhos.items()]
    )  # fmt: skip


def _all_sources(**overrides) -> dict:
    sources = {
        "localisation": _localisation({"good": 0.93, "worse": 0.91}),
        "faithfulness": _faithfulness({"good": (0.41, 0.8), "worse": (0.71, 0.8)}),
        "sanity": _sanity({"good": 0.19, "worse": 0.2}),
        "manifests": {"good": pd.DataFrame({"seconds": [0.5, 0.7, 0.6]})},
    }
    return {**sources, **overrides}


def test_a_method_that_localises_beats_random_and_passes_sanity_passes():
    table = trust_table(["good", "worse"], **_all_sources())
    assert list(table.columns) == COLUMNS
    assert table["method"].tolist() == ["good", "worse"]  # not the random control
    good = table.set_index("method").loc["good"]
    assert good["verdict"] == "passes"
    assert good["localisation_auc"] == 0.93  # the conjoined row, not a class or subjects
    assert (good["deletion_auc"], good["deletion_auc_random"]) == (0.41, 0.66)
    assert (good["insertion_auc"], good["insertion_auc_random"]) == (0.8, 0.6)
    assert (good["sanity_spearman_abs"], good["sanity_bound"]) == (0.19, 0.5)
    assert good["seconds_per_map"] == pytest.approx(0.6)
    for check in ("localisation", "deletion", "insertion", "sanity"):
        assert good[f"{check}_passed"] is True, check
    assert good["roar_passed"] is None and np.isnan(good["roar_drop"])
    assert good["reading"] == (
        "localises the planted effect (AUC 0.93); deletion 0.41 vs random 0.66; "
        "insertion 0.80 vs random 0.60; sanity passed (|rho| 0.19 <= 0.5); "
        "ROAR not measured; 0.6 s/map"
    )
    assert good["localisation_reading"].startswith("localises the planted effect: ")
    assert "chance 0.5" in good["localisation_reading"]
    assert good["roar_reading"] == "not measured: run `brainmaps roar RUN`"


def test_worse_than_random_on_deletion_fails_with_the_reason():
    worse = trust_table([], **_all_sources()).set_index("method").loc["worse"]
    assert worse["verdict"] == "fails"
    assert worse["deletion_passed"] is False
    assert worse["localisation_passed"] and worse["insertion_passed"] and worse["sanity_passed"]
    assert "deletion 0.71 vs random 0.66 (not better than random)" in worse["reading"]
    assert worse["deletion_reading"] == (
        "deletion AUC 0.71 vs random 0.66: not better than random (lower is better)"
    )
    # no maps.tsv of this method: its cost is not measured, and that is not a failure
    assert np.isnan(worse["seconds_per_map"])
    assert worse["cost_reading"] == (
        "not measured for this method: run `brainmaps explain RUN --methods worse`"
    )


@pytest.mark.parametrize(
    ("sources", "check", "reason"),
    [
        ({"localisation": _localisation({"m": LOCALISATION_BOUND})}, "localisation",
         "does not localise the planted effect (AUC 0.60)"),
        ({"faithfulness": _faithfulness({"m": (0.66, 0.8)})}, "deletion",
         "deletion 0.66 vs random 0.66 (not better than random)"),
        ({"faithfulness": _faithfulness({"m": (0.4, 0.55)})}, "insertion",
         "insertion 0.55 vs random 0.60 (not better than random)"),
        ({"sanity": _sanity({"m": 0.88})}, "sanity", "sanity failed (|rho| 0.88 > 0.5)"),
    ],
)  # fmt: skip
def test_each_failed_check_fails_the_method(sources, check, reason):
    row = trust_table(["m"], **sources).iloc[0]
    assert row["verdict"] == "fails" and row[f"{check}_passed"] is False
    assert reason in row["reading"]


def test_missing_tables_are_not_measured():
    only_sanity = trust_table(["m"], sanity=_sanity({"m": 0.1})).iloc[0]
    assert only_sanity["verdict"] == "passes"  # what was measured passed
    for check, command in [("localisation", "localise"), ("deletion", "faithfulness"),
                           ("insertion", "faithfulness"), ("roar", "roar")]:  # fmt: skip
        assert only_sanity[f"{check}_passed"] is None
        assert only_sanity[f"{check}_reading"] == f"not measured: run `brainmaps {command} RUN`"
    for column in ("localisation_auc", "deletion_auc", "deletion_auc_random", "roar_drop"):
        assert np.isnan(only_sanity[column])
    assert "deletion not measured; insertion not measured" in only_sanity["reading"]

    nothing = trust_table(["m"], run="runs/a").iloc[0]
    assert nothing["verdict"] == "incomplete"
    assert nothing["sanity_reading"] == "not measured: run `brainmaps sanity runs/a`"

    no_step = trust_table(["m"], commands={"roar": None, "sanity": "my-sanity"}).iloc[0]
    assert no_step["roar_reading"] == "not measured: no ROAR step in this brainmaps"
    assert no_step["sanity_reading"] == "not measured: run `my-sanity RUN`"

    no_truth = trust_table(["m"], ground_truth=False).iloc[0]
    assert no_truth["localisation_reading"].startswith("no ground truth: ")
    assert no_truth["reading"].startswith("no ground truth to localise; ")
    assert no_truth["verdict"] == "incomplete"


def test_a_method_missing_from_a_table_names_the_command_for_it():
    sources = _all_sources(sanity=_sanity({"good": 0.19}))
    table = trust_table(["good", "occlusion"], **sources).set_index("method")
    assert table.index.tolist() == ["good", "occlusion", "worse"]  # never left out
    occlusion = table.loc["occlusion"]
    assert occlusion["verdict"] == "incomplete"
    assert occlusion["sanity_reading"] == (
        "not measured for this method: run `brainmaps sanity RUN --methods occlusion`"
    )
    assert table.loc["worse", "sanity_passed"] is None
    assert table.loc["worse", "verdict"] == "fails"  # deletion failed, sanity not measured


def test_roar_reading():
    roar = pd.DataFrame(
        [{"method": m, "fraction": f, "fold": k, "accuracy": acc + 0.02 * k,
          "accuracy_random": rnd + 0.02 * k}
         for m, curve in {
             "roar_good": [(0.0, 0.9, 0.9), (0.1, 0.7, 0.85), (0.5, 0.55, 0.8)],
             "roar_bad": [(0.0, 0.9, 0.9), (0.1, 0.86, 0.85), (0.5, 0.8, 0.8)],
         }.items()
         for f, acc, rnd in curve for k in (0, 1)]
    )  # fmt: skip
    table = trust_table([], roar=roar).set_index("method")
    good, bad = table.loc["roar_good"], table.loc["roar_bad"]
    # fraction 0 is ignored; folds averaged per fraction, then over fractions 0.1 and 0.5
    assert good["roar_accuracy"] == pytest.approx((0.71 + 0.56) / 2)
    assert good["roar_accuracy_random"] == pytest.approx((0.86 + 0.81) / 2)
    assert good["roar_drop"] == pytest.approx(0.2)
    assert good["roar_passed"] is True and good["verdict"] == "passes"
    assert "ROAR drop +0.20 beyond random" in good["reading"]
    assert "fractions 0.1, 0.5" in good["roar_reading"]
    assert bad["roar_drop"] == pytest.approx(-0.005)
    assert bad["roar_passed"] is False and bad["verdict"] == "fails"
    assert "ROAR drop -0.01 beyond random (not larger)" in bad["reading"]
    assert "costs no more than random" in bad["roar_reading"]
    assert table.loc["roar_good", "localisation_reading"].startswith("not measured")


def test_localisation_row_without_a_combined_map():
    loc = pd.DataFrame({"method": ["m", "m"], "map": ["subjects", "all"], "roc_auc": [0.2, 0.8]})
    row = trust_table(["m"], localisation=loc, combined_map=None).iloc[0]
    assert row["localisation_auc"] == 0.8 and row["localisation_passed"] is True


def test_sanity_passed_column_read_as_text_and_bound_taken_from_the_table():
    sanity = pd.DataFrame(
        {"method": ["a", "b"], "spearman_abs": [0.6, 0.3], "bound": [0.7, 0.7],
         "passed": ["True", "False"]}
    )  # fmt: skip
    table = trust_table([], sanity=sanity).set_index("method")
    assert table.loc["a", "sanity_passed"] is True and table.loc["a", "sanity_bound"] == 0.7
    assert table.loc["b", "sanity_passed"] is False  # the step's own verdict is kept
    no_column = trust_table([], sanity=sanity.drop(columns=["passed", "bound"]))
    assert no_column["sanity_passed"].tolist() == [False, True]  # 0.5 bound


def test_cost_without_seconds_is_not_recorded():
    row = trust_table(["m"], manifests={"m": pd.DataFrame({"file": ["a"]})}).iloc[0]
    assert np.isnan(row["seconds_per_map"]) and row["cost_reading"].startswith("not recorded")


def test_tables_with_other_columns_are_refused():
    with pytest.raises(ConfigError, match=r"faithfulness table lacks columns \['auc_random'\]"):
        trust_table(["m"], faithfulness=pd.DataFrame({"method": ["m"], "mode": ["x"], "auc": [1]}))
    with pytest.raises(ConfigError, match="localisation_bound"):
        trust_table(["m"], localisation_bound=1.5)


def test_readings_show_enough_decimals_to_tell_the_numbers_apart():
    faith = _faithfulness({"m": (0.655, 0.8)})
    faith.loc[faith["mode"] == "deletion", "auc_random"] = 0.658
    row = trust_table(["m"], faithfulness=faith, localisation=_localisation({"m": 0.6004})).iloc[0]
    assert row["deletion_passed"] is True
    assert "deletion 0.655 vs random 0.658" in row["reading"]
    assert row["localisation_passed"] is True
    assert "class-mean map AUC 0.6004 > 0.6" in row["localisation_reading"]


def test_sanity_reading_adds_the_data_randomisation_result():
    sanity = pd.DataFrame(
        {"method": ["both", "labels_stick", "cascade_only", "flat"],
         "spearman_abs": [0.2, 0.2, 0.2, np.nan], "bound": 0.5,
         "data_n_subjects": [4, 4, np.nan, np.nan],
         "data_spearman_abs": [0.3, 0.97, np.nan, np.nan],
         "data_accuracy": [0.52, 0.48, np.nan, np.nan],
         "passed": ["True", "False", "1.0", "False"]}  # 1.0: a float-read boolean column
    )  # fmt: skip
    table = trust_table([], sanity=sanity, run="runs/a").set_index("method")
    both = table.loc["both"]
    assert both["sanity_passed"] is True and both["verdict"] == "passes"
    assert both["sanity_data_spearman_abs"] == 0.3 and both["sanity_data_accuracy"] == 0.52
    assert both["sanity_reading"] == (
        "sanity passed: median |rho| 0.20 <= 0.5 between the trained and the fully "
        "randomised model's maps; labels permuted: median |rho| 0.30 <= 0.5; that "
        "model's accuracy 0.52"
    )
    assert (
        "sanity passed (|rho| 0.20 <= 0.5; labels permuted: median |rho| 0.30 <= 0.5)"
        in (both["reading"])
    )
    # passing the cascade is not enough: failing the data randomisation fails the method
    sticks = table.loc["labels_stick"]
    assert sticks["sanity_passed"] is False and sticks["verdict"] == "fails"
    assert "labels permuted: median |rho| 0.97 > 0.5" in sticks["sanity_reading"]
    only = table.loc["cascade_only"]
    assert only["sanity_passed"] is True and np.isnan(only["sanity_data_spearman_abs"])
    assert only["sanity_reading"].endswith(
        "data randomisation not measured (`brainmaps sanity runs/a --data-randomisation` "
        "retrains on permuted labels)"
    )
    assert only["reading"].startswith("localisation not measured")
    assert "sanity passed (|rho| 0.20 <= 0.5)" in only["reading"]
    # every trained map constant: the step's verdict (failed), not "not measured"
    flat = table.loc["flat"]
    assert flat["sanity_passed"] is False and flat["verdict"] == "fails"
    assert flat["sanity_reading"].startswith("sanity failed: every trained map is constant")
