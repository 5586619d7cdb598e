"""Features tables: subject matching, and identifier columns dropped with a warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmaps.baselines.tables import find_identifier_columns, load_features
from brainmaps.exceptions import BrainmapsWarning, CohortError
from conftest import shared_data


def _table(tmp_path, frame: pd.DataFrame, name="features.tsv"):
    path = tmp_path / name
    frame.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)
    return path


def _frame(n=8):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:03d}" for i in range(n)],
            "ID": np.arange(1, n + 1) * 7,  # the paper's leak: a numeric subject ID
            "hippocampus_volume": rng.normal(4000, 300, n),
            "ventricle_volume": rng.normal(20000, 3000, n),
        }
    )


def test_the_subject_id_column_is_dropped_with_a_warning(tmp_path):
    path = _table(tmp_path, _frame())
    with pytest.warns(BrainmapsWarning, match=r"'ID': identifier-like name \(id\)"):
        features = load_features(path, [f"{i:03d}" for i in range(8)])
    assert list(features.columns) == ["hippocampus_volume", "ventricle_volume"]


def test_identifier_columns_are_found_by_name_and_by_values():
    n = 10
    wiggle = np.array([0, 5, -5, 5, -5, 5, -5, 5, -5, 0])
    table = pd.DataFrame(
        {
            "SubjectID": np.arange(n) + 100,
            "scan_date": [f"2010-01-{i + 1:02d}" for i in range(n)],
            "Release": ["r1"] * n,
            "PTID": np.arange(n),
            "row": np.arange(n) * 3 + 1,  # no telling name, but unique increasing integers
            "group": ["a", "b"] * 5,
            "Left-Hippocampus": np.linspace(3000, 4000, n) + wiggle,
            "MUSE_702": np.arange(n) * 8.0 + 8 * wiggle,  # integer volumes, not monotonic
            "eTIV": np.linspace(1.2e6, 1.6e6, n) + 0.5,  # increasing but not integers
        }
    )
    found = find_identifier_columns(table)
    assert set(found) == {"SubjectID", "scan_date", "Release", "PTID", "row", "group"}
    assert "row or subject number" in found["row"] and found["group"] == "not numeric"
    # too few rows to tell a row number from a measurement
    assert "row" not in find_identifier_columns(table.head(6))


def test_rows_follow_the_cohort_and_sub_prefixes_are_ignored(tmp_path):
    frame = _frame().drop(columns="ID")
    path = _table(tmp_path, frame, "features.csv")
    subjects = ["005", "sub-001", "003"]
    features = load_features(path, subjects)
    expected = frame.set_index("participant_id").loc[["sub-005", "sub-001", "sub-003"]]
    np.testing.assert_allclose(features.to_numpy(), expected.to_numpy())


def test_missing_subjects_are_listed(tmp_path):
    path = _table(tmp_path, _frame().drop(columns="ID"))
    with pytest.raises(CohortError, match=r"no row for 2 subject.*042, 043"):
        load_features(path, ["001", "042", "043"])


def test_sessions_are_matched_and_constant_and_target_columns_dropped(tmp_path):
    frame = pd.DataFrame(
        {
            "subject": ["a", "a", "b", "b"],
            "session": ["1", "2", "1", "2"],
            "volume": [1.0, 2.0, 3.0, 4.0],
            "age": [30.0, 31.0, 50.0, 51.0],
            "scanner_field": [3.0, 3.0, 3.0, 3.0],
            "flat": [1.0, 1.0, 1.0, 1.0],
        }
    )
    path = _table(tmp_path, frame)
    with pytest.warns(BrainmapsWarning) as record:
        features = load_features(path, ["b", "a"], ["ses-2", "1"], exclude=["age"])
    assert features["volume"].tolist() == [4.0, 1.0]
    assert list(features.columns) == ["volume"]
    text = str(record[0].message)
    assert "'age': the target" in text and "'flat': constant" in text
    with pytest.raises(CohortError, match="several rows"):
        load_features(path, ["a", "b"])  # no sessions given: subjects are ambiguous


def test_dlmuse_table_is_read_as_is():
    path = shared_data("ixi-dev", "derivatives", "dlmuse", "roi_volumes.tsv")
    participants = pd.read_csv(path.parents[2] / "participants.tsv", sep="\t")
    subjects = participants["participant_id"].str.removeprefix("sub-").tolist()
    features = load_features(path, subjects)
    assert len(features) == len(subjects) and features.shape[1] > 100
    assert all(c.startswith("MUSE_") for c in features.columns)
    assert np.isfinite(features.to_numpy()).all()
