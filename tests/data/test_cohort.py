"""Tests of brainmaps.data.cohort: tables, BIDS folders, label encoding and errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmaps.data.cohort import Cohort, load_cohort
from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError, ImageError


@pytest.fixture
def ixi_dev():
    """The shared ixi-dev BIDS dataset (repo_root/../shared/data); skips when absent."""
    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ixi-dev"
    if not (root / "participants.tsv").is_file():
        pytest.skip(f"shared dataset not found at {root}")
    return root


def write_table(folder: Path, rows: list[dict], name: str = "cohort.tsv", touch=True) -> Path:
    """Write a table (separator from the suffix) and create the image files it lists."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    sep = {".tsv": "\t", ".csv": ",", ".txt": ";"}[Path(name).suffix]
    frame.to_csv(folder / name, sep=sep, index=False)
    for column in ("path", "image", "file", "Image"):
        if touch and column in frame:
            for value in frame[column].dropna():
                (folder / value).parent.mkdir(parents=True, exist_ok=True)
                (folder / value).touch()
    return folder / name


def make_bids(root: Path, participants: list[dict], images: list[str]) -> Path:
    """Write participants.tsv and touch the given relative image paths."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(participants).to_csv(root / "participants.tsv", sep="\t", index=False)
    for rel in images:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    return root


def group_rows(n=4):
    return [
        {
            "participant_id": f"s{i}",
            "path": f"img/s{i}.nii.gz",
            "group": ["patient", "control"][i % 2],
            "age": 20.5 + i,
            "site": f"site{i % 2}",
        }
        for i in range(n)
    ]


def test_table_tsv_relative_paths_and_mapping(tmp_path):
    source = write_table(tmp_path / "study", group_rows())
    cohort = load_cohort(source, "group")
    t = cohort.table
    assert list(t.columns) == ["subject", "session", "path", "label", "y", "site", "age"]
    assert t["path"][1] == str(tmp_path / "study" / "img" / "s1.nii.gz")
    assert cohort.task == "classification" and cohort.classes == ("control", "patient")
    assert cohort.class_mapping() == {"control": 0, "patient": 1}
    np.testing.assert_array_equal(cohort.labels, [1, 0, 1, 0])
    assert cohort.labels.dtype == np.int64
    assert list(cohort.subjects) == ["s0", "s1", "s2", "s3"]
    assert list(t["session"]) == [""] * 4 and list(t["site"]) == ["site0", "site1"] * 2
    assert t["age"].tolist() == [20.5, 21.5, 22.5, 23.5]
    assert len(cohort) == 4 and cohort.source == str(source)
    assert cohort.summary() == "4 scans, 4 subjects, target 'group': control=2, patient=2"


def test_csv_and_txt_with_guessed_columns(tmp_path):
    rows = [{"Subject": f"a{i}", "image": f"a{i}.nii", "dx": "AD" if i else "CN"} for i in range(3)]
    for name in ("list.csv", "list.txt"):
        cohort = load_cohort(write_table(tmp_path, rows, name), "dx")
        assert cohort.classes == ("AD", "CN") and list(cohort.labels) == [1, 0, 0]
        assert cohort.table["path"][2] == str(tmp_path / "a2.nii")


def test_given_class_order_and_explicit_columns(tmp_path):
    rows = [{"who": f"s{i}", "nii": f"s{i}.nii", "g": ["x", "y"][i % 2]} for i in range(4)]
    source = write_table(tmp_path, rows)
    for i in range(4):
        (tmp_path / f"s{i}.nii").touch()
    cohort = load_cohort(source, "g", subject_col="who", path_col="nii", classes=("y", "x"))
    assert cohort.classes == ("y", "x") and list(cohort.labels) == [1, 0, 1, 0]
    with pytest.raises(CohortError, match=r"labels not listed: y"):
        load_cohort(source, "g", subject_col="who", path_col="nii", classes=["x", "z"])


@pytest.mark.parametrize(
    ("values", "task", "classes"),
    [
        ([20.5, 31.0, 44.2, 60.0], "regression", ()),  # non-integer floats
        (list(range(12)), "regression", ()),  # > 10 distinct integers
        ([0, 1, 2, 1], "classification", ("0", "1", "2")),  # few integer codes
        (["1.0", "2", "10", "2.0"], "classification", ("1", "2", "10")),  # numeric order
        (["F", "M", "M", "F"], "classification", ("F", "M")),
    ],
)
def test_task_auto_detection(tmp_path, values, task, classes):
    rows = [{"subject": f"s{i}", "path": f"s{i}.nii", "t": v} for i, v in enumerate(values)]
    cohort = load_cohort(write_table(tmp_path, rows), "t")
    assert cohort.task == task and cohort.classes == classes
    if task == "regression":
        np.testing.assert_allclose(cohort.labels, np.asarray(values, dtype=np.float32))
        assert cohort.labels.dtype == np.float32 and "(regression): mean" in cohort.summary()


def test_forced_tasks(tmp_path):
    rows = [{"subject": f"s{i}", "path": f"s{i}.nii", "t": v} for i, v in enumerate("ab")]
    rows += [{"subject": "s9", "path": "s9.nii", "t": "a"}]
    source = write_table(tmp_path, rows)
    with pytest.raises(CohortError, match=r"must be numeric for regression, found a, b"):
        load_cohort(source, "t", task="regression")
    with pytest.raises(ConfigError, match="task must be one of"):
        load_cohort(source, "t", task="ordinal")
    ages = [{"subject": f"s{i}", "path": f"s{i}.nii", "t": 2 * i} for i in range(3)]
    cohort = load_cohort(write_table(tmp_path, ages, "ages.tsv"), "t", task="regression")
    assert cohort.task == "regression" and cohort.labels.tolist() == [0, 2, 4]


def test_unknown_target_lists_columns(tmp_path):
    source = write_table(tmp_path, group_rows())
    with pytest.raises(CohortError) as info:
        load_cohort(source, "Age")
    message = str(info.value)
    assert "'Age' not found" in message and "Did you mean 'age'?" in message
    assert "participant_id, path, group, age, site" in message


def test_unknown_subject_and_path_columns(tmp_path):
    source = write_table(tmp_path, group_rows())
    with pytest.raises(CohortError, match=r"subject_col='pid'.*participant_id, path, group"):
        load_cohort(source, "group", subject_col="pid")
    with pytest.raises(CohortError, match=r"path_col='t1w'.*available columns"):
        load_cohort(source, "group", path_col="t1w")
    rows = [{"name": "a", "path": "a.nii", "g": "x"}]
    with pytest.raises(CohortError, match=r"no subject column: expected one of participant_id"):
        load_cohort(write_table(tmp_path, rows, "other.tsv"), "g")


def test_duplicates_named_and_sessions_allowed(tmp_path):
    rows = [*group_rows(), dict(group_rows()[2], path="img/again.nii.gz")]
    with pytest.raises(CohortError, match=r"duplicates for s2 \(lines 4, 6\)"):
        load_cohort(write_table(tmp_path, rows), "group")
    for i, row in enumerate(rows):
        row["session"] = "2" if i == 4 else "1"
    cohort = load_cohort(write_table(tmp_path, rows), "group")
    assert len(cohort) == 5 and cohort.table["subject"].nunique() == 4
    assert cohort.table["session"].tolist() == ["1", "1", "1", "1", "2"]


def test_missing_labels_error_and_drop(tmp_path):
    rows = group_rows(6)
    rows[1]["group"] = None
    rows[4]["group"] = "n/a"
    source = write_table(tmp_path, rows)
    with pytest.raises(CohortError) as info:
        load_cohort(source, "group")
    message = str(info.value)
    assert "missing for 2 of 6 scans" in message and "s1, s4" in message
    assert "drop_missing=True" in message and "--drop-missing" in message
    with pytest.warns(BrainmapsWarning, match=r"dropped subjects s1, s4") as record:
        cohort = load_cohort(source, "group", drop_missing=True)
    assert record[0].filename == __file__  # the warning points at the caller
    assert cohort.subjects.tolist() == ["s0", "s2", "s3", "s5"]


def test_single_class(tmp_path):
    rows = [{"subject": f"s{i}", "path": f"s{i}.nii", "g": "ctl"} for i in range(3)]
    with pytest.raises(CohortError, match=r"has 1 class\(es\) \(ctl\).*at least 2"):
        load_cohort(write_table(tmp_path, rows), "g")


def test_missing_image_names_file_and_row(tmp_path):
    source = write_table(tmp_path, group_rows())
    (tmp_path / "img" / "s2.nii.gz").unlink()
    with pytest.raises(ImageError, match=r"s2\.nii\.gz \(line 4 of .*cohort\.tsv, subject 's2'"):
        load_cohort(source, "group")


def test_bad_source(tmp_path):
    with pytest.raises(CohortError, match=r"nothere\.tsv does not exist"):
        load_cohort(tmp_path / "nothere.tsv", "g")
    (tmp_path / "book.xlsx").touch()
    with pytest.raises(CohortError, match=r"book\.xlsx is not a \.tsv/\.csv/\.txt table"):
        load_cohort(tmp_path / "book.xlsx", "g")


def test_check_images_validates_content(tmp_path):
    source = write_table(tmp_path, group_rows(2))
    with pytest.raises(ImageError, match=r"s0\.nii\.gz could not be read"):
        load_cohort(source, "group", check_images=True)


def test_to_tsv_round_trip(tmp_path):
    cohort = load_cohort(write_table(tmp_path, group_rows()), "group")
    cohort.to_tsv(tmp_path / "out" / "cohort.tsv")
    back = pd.read_csv(tmp_path / "out" / "cohort.tsv", sep="\t", keep_default_na=False)
    assert back["y"].tolist() == [1, 0, 1, 0] and back["path"][0] == cohort.table["path"][0]
    assert isinstance(cohort, Cohort)


def bids_participants(n=4):
    return [{"participant_id": f"sub-{i:02d}", "sex": "FM"[i % 2], "age": 30 + i} for i in range(n)]


def test_bids_with_sessions(tmp_path):
    images = [
        f"sub-{i:02d}/ses-{s}/anat/sub-{i:02d}_ses-{s}_T1w.nii.gz"
        for i in range(4)
        for s in ("a", "b")
    ]
    images += ["sub-00/ses-a/anat/sub-00_ses-a_T2w.nii.gz", "derivatives/sub-00/anat/x_T1w.nii"]
    root = make_bids(tmp_path / "bids", bids_participants(), images)
    cohort = load_cohort(root, "sex")
    assert len(cohort) == 8 and cohort.classes == ("F", "M")
    assert cohort.table["subject"].tolist()[:2] == ["00", "00"]
    assert cohort.table["session"].tolist()[:2] == ["a", "b"]
    assert cohort.table["path"][0] == str(root / images[0])
    assert cohort.table["age"].tolist()[:3] == [30, 30, 31]


def test_bids_other_datatype_and_suffix(tmp_path):
    images = [f"sub-{i:02d}/dwi/sub-{i:02d}_FA.nii.gz" for i in range(4)]
    images += [f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz" for i in range(4)]
    root = make_bids(tmp_path, bids_participants(), images)
    cohort = load_cohort(root, "age", suffix="FA")
    assert cohort.task == "classification"  # 4 distinct integers: classes
    assert all(p.endswith("_FA.nii.gz") for p in cohort.table["path"])


def test_bids_mismatched_subjects(tmp_path):
    images = [f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz" for i in (0, 1, 2, 7)]
    root = make_bids(tmp_path, bids_participants(), images)
    with pytest.raises(CohortError, match=r"1 participant\(s\) .* without any \*_T1w image: 03"):
        load_cohort(root, "sex")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cohort = load_cohort(root, "sex", drop_missing=True)
    assert cohort.subjects.tolist() == ["00", "01", "02"]
    messages = " | ".join(str(w.message) for w in caught)
    assert "without any *_T1w image: 03" in messages and "but no row in" in messages
    (root / "sub-03/anat").mkdir(parents=True)
    (root / "sub-03/anat/sub-03_T1w.nii.gz").touch()
    with pytest.raises(CohortError, match=r"images but no row in .*participants\.tsv: 07"):
        load_cohort(root, "sex")


def test_bids_several_images_per_subject(tmp_path):
    images = [f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz" for i in range(4)]
    images.append("sub-01/anat/sub-01_run-2_T1w.nii.gz")
    root = make_bids(tmp_path, bids_participants(), images)
    with pytest.raises(CohortError, match=r"sub-01: sub-01_T1w.nii.gz, sub-01_run-2.*--suffix"):
        load_cohort(root, "sex")


def test_bids_without_participants(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(CohortError, match=r"has no participants\.tsv"):
        load_cohort(tmp_path, "sex")


def test_ixi_dev_loads(ixi_dev):
    cohort = load_cohort(ixi_dev, "sex")
    assert len(cohort) == 40 and cohort.classes == ("F", "M")
    assert np.bincount(cohort.labels).tolist() == [20, 20]
    assert all(Path(p).is_file() for p in cohort.table["path"])
    assert set(cohort.table["site"]) == {"HH"}
    age = load_cohort(ixi_dev, "age")
    assert age.task == "regression" and 20 <= age.labels.min() < age.labels.max() <= 80
