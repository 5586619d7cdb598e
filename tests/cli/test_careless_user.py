"""A careless user at the command line: every mistake is one clear line and exit status 2.

Each test makes one mistake through ``brainmaps.cli.main.main`` and checks the key words
of the one-line message (which parameter or file, what is wrong, how to fix it) and that
nothing half-written is left behind.
"""

from __future__ import annotations

import errno
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainmaps.cli.main import main
from tiny import TINY_GRID

GRID = "x".join(map(str, TINY_GRID))


def _error(capsys) -> str:
    """The one error line on stderr (warnings, one line each, may come before it)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if ": error: " in line]
    assert len(errors) == 1 and all(": warning: " in line for line in err[:-1]), err
    return errors[0]


def _nothing_written(run: Path) -> bool:
    """No run-folder content (an empty folder holding the writer's lock may remain)."""
    return not run.exists() or {p.name for p in run.iterdir()} <= {".lock"}


def _images(cohort: Path, n: int) -> list[Path]:
    return sorted(cohort.glob("sub-*/anat/*_T1w.nii.gz"))[:n]


def _table(folder: Path, cohort: Path, name: str = "cohort.tsv", sep: str = "\t", n: int = 6):
    """A cohort table of ``n`` scans of ``cohort`` (group labels alternate)."""
    paths = _images(cohort, n)
    table = pd.DataFrame(
        {
            "subject": [p.name.split("_")[0] for p in paths],
            "path": [str(p) for p in paths],
            "group": ["control", "patient"] * (n // 2),
        }
    )
    path = folder / name
    table.to_csv(path, sep=sep, index=False)
    return path, table


def _huge_header(path: Path) -> Path:
    """A NIfTI file whose header claims a 30000^3 float32 volume (about 108 TB)."""
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    header.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\0" * 4 + np.zeros(1000, np.float32).tobytes()
    path.write_bytes(gzip.compress(blob) if path.name.endswith(".gz") else blob)
    return path


@pytest.fixture
def atlas(tiny_cohort, tmp_path) -> tuple[Path, Path]:
    """A one-region label image (the planted effect) and its table, written as CSV."""
    gt = nib.load(tiny_cohort / "ground_truth_mask.nii.gz")
    img = tmp_path / "effect_atlas.nii.gz"
    data = (np.asarray(gt.dataobj) > 0).astype(np.int16)
    nib.save(nib.Nifti1Image(data, gt.affine), img)
    labels = tmp_path / "effect_atlas_labels.tsv"
    labels.write_text("index,name\n1,effect\n")  # a CSV with a .tsv name
    return img, labels


# -- A. parameters ---------------------------------------------------------------------


def test_empty_methods_list(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--methods", " , "]) == 2
    line = _error(capsys)
    assert "--methods" in line and "comma-separated" in line


def test_unknown_synth_region_names_the_choices(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["synth", str(out), "--regions", "left_hippocampus,amygdala"]) == 2
    line = _error(capsys)
    assert "--regions" in line and "amygdala" in line and "precuneus" in line
    assert not out.exists()


def test_bad_number_is_one_line(capsys):
    assert main(["train", "x", "--target", "group", "--epochs", "many"]) == 2
    line = _error(capsys)
    assert "--epochs" in line and "'many'" in line and "--help" in line


# -- B. one image gate -----------------------------------------------------------------


def test_predict_huge_header_is_refused(tiny_run, tmp_path, capsys):
    bad = _huge_header(tmp_path / "huge_T1w.nii.gz")
    out = tmp_path / "p.tsv"
    assert main(["predict", str(tiny_run), str(bad), "--out", str(out)]) == 2
    line = _error(capsys)
    assert "huge_T1w.nii.gz" in line and "30000" in line and "corrupt" in line
    assert not out.exists()


def test_train_huge_uncompressed_header_is_refused(tiny_cohort, tmp_path, capsys):
    path, table = _table(tmp_path, tiny_cohort, n=6)
    table.loc[5, "path"] = str(_huge_header(tmp_path / "huge_T1w.nii"))
    table.to_csv(path, sep="\t", index=False)
    args = ["train", str(path), "--target", "group", "--out", str(tmp_path / "run")]
    args += ["--grid", GRID, "--folds", "2", "--epochs", "1", "--no-progress"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 2
    line = _error(capsys)
    assert "huge_T1w.nii" in line and "truncated" in line and "30000" in line


def test_atlas_with_probabilities_is_refused(tiny_cohort, atlas, tmp_path, capsys):
    _, labels = atlas
    gt = nib.load(tiny_cohort / "ground_truth_mask.nii.gz")
    prob = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(gt.dataobj) * 0.5, gt.affine), prob)
    args = ["morphometry", str(tiny_cohort), "--atlas", str(prob), "--labels", str(labels)]
    assert main([*args, "--out", str(tmp_path / "f.tsv"), "--no-progress"]) == 2
    line = _error(capsys)
    assert "prob.nii.gz" in line and "non-integer" in line
    assert not (tmp_path / "f.tsv").exists()


# -- C. cohort tables ------------------------------------------------------------------


def test_csv_named_tsv_is_read(tiny_cohort, atlas, tmp_path, capsys):
    path, _ = _table(tmp_path, tiny_cohort, name="scans.tsv", sep=",", n=4)
    img, labels = atlas  # its label table is a CSV named .tsv too
    out = tmp_path / "features.tsv"
    args = ["morphometry", str(path), "--atlas", str(img), "--labels", str(labels)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    written = pd.read_csv(out, sep="\t")
    assert len(written) == 4 and "effect_volume" in written.columns


def test_header_only_table(tmp_path, capsys):
    path = tmp_path / "cohort.tsv"
    path.write_text("subject\tpath\tgroup\n")
    assert main(["train", str(path), "--target", "group", "--out", str(tmp_path / "r")]) == 2
    line = _error(capsys)
    assert "cohort.tsv" in line and "the table has no rows" in line and "class" not in line
    assert _nothing_written(tmp_path / "r")


def test_mixed_label_types(tiny_cohort, tmp_path, capsys):
    path, table = _table(tmp_path, tiny_cohort, n=6)
    table["group"] = ["1", "a", "2.5", "1", "a", "2"]
    table.to_csv(path, sep="\t", index=False)
    assert main(["train", str(path), "--target", "group", "--out", str(tmp_path / "r")]) == 2
    line = _error(capsys)
    assert "'group'" in line and "mixes numbers and text" in line
    assert "text: a" in line and "decimals: 2.5" in line and "integers: 1, 2" in line
    assert "--task" in line and _nothing_written(tmp_path / "r")


# -- D. messages that keep their information -------------------------------------------


@pytest.mark.parametrize("command", ["train", "demo", "preprocess"])
def test_grid_keeps_its_explanation(command, tmp_path, capsys):
    args = {"train": ["train", "x", "--target", "g"], "demo": ["demo"]}
    args["preprocess"] = ["preprocess", "x", "--out", str(tmp_path / "o")]
    assert main([*args[command], "--grid", "3x3"]) == 2
    line = _error(capsys)
    assert "--grid" in line and "not three positive integers" in line and "58x70x58" in line


def test_unsafe_checkpoint(tiny_run, tiny_cohort, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    models = sorted(run.glob("fold-*/model.pt"))
    assert models
    for path in models:
        payload = torch.load(path, weights_only=True)
        torch.save({**payload, "extra": pd.Timedelta(1)}, path)
    assert main(["predict", str(run), str(_images(tiny_cohort, 1)[0])]) == 2
    line = _error(capsys)
    assert "model.pt" in line and "objects" in line and "state_dict()" in line
    assert "weights_only" not in line and "retrain" in line


def test_exclude_flagged_is_named_as_the_cli_flag():
    from brainmaps.data.pipeline import _warn_problems

    qc = pd.DataFrame(
        {"subject": ["01"], "session": [""], "status": ["ok"], "flagged": [True], "error": [""]}
    )
    with pytest.warns(UserWarning, match="--exclude-flagged"):
        _warn_problems(qc, Path("out"), exclude_flagged=False)


def test_morphometry_of_a_cohort_needs_no_target(tiny_cohort, atlas, tmp_path, capsys):
    img, labels = atlas
    out = tmp_path / "features.tsv"
    args = ["morphometry", str(tiny_cohort), "--atlas", str(img), "--labels", str(labels)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert len(pd.read_csv(out, sep="\t")) == 40
    assert "40 scans x 1 regions" in capsys.readouterr().out


# -- E. the file system ----------------------------------------------------------------


def test_train_out_under_a_file(tiny_cohort, tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker / "run"
    assert main(["train", str(tiny_cohort), "--target", "group", "--out", str(out)]) == 2
    line = _error(capsys)
    assert "--out" in line and "notes.txt is a file, not a folder" in line
    assert blocker.read_text() == "mine"


def test_train_out_is_a_file(tiny_cohort, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("mine")
    assert main(["train", str(tiny_cohort), "--target", "group", "--out", str(out)]) == 2
    line = _error(capsys)
    assert "--out" in line and "is a file, expected a folder" in line
    assert out.read_text() == "mine"


def test_cache_dir_under_a_file(tiny_cohort, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["train", str(tiny_cohort), "--target", "group", "--out", str(tmp_path / "r")]
    assert main([*args, "--cache-dir", str(blocker / "cache")]) == 2
    line = _error(capsys)
    assert "--cache-dir" in line and "is a file, not a folder" in line
    assert not (tmp_path / "r").exists()


def test_predict_out_is_a_folder_checked_first(tmp_path, capsys):
    out = tmp_path / "predictions"
    out.mkdir()
    # the run folder does not exist: the --out check comes before any work
    assert main(["predict", str(tmp_path / "no_run"), "scan.nii.gz", "--out", str(out)]) == 2
    line = _error(capsys)
    assert "--out" in line and "is a folder, expected a file name" in line
    assert list(out.iterdir()) == []


def test_synth_into_a_file(tmp_path, capsys):
    out = tmp_path / "cohort"
    out.write_text("mine")
    assert main(["synth", str(out), "--subjects", "4", "--no-progress"]) == 2
    line = _error(capsys)
    assert "OUT" in line and "is a file, expected a folder" in line
    assert out.read_text() == "mine"


def test_preprocess_out_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["preprocess", str(tmp_path), "--out", str(blocker / "o")]) == 2
    assert "is a file, not a folder" in _error(capsys)


def test_full_disk_while_saving_a_checkpoint(tmp_path, monkeypatch):
    from brainmaps.models.checkpoints import save_checkpoint

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    path = tmp_path / "fold-0" / "model.pt"
    with pytest.raises(OSError, match="No space left") as info:
        save_checkpoint(path, torch.nn.Linear(2, 2), {"fold": 0})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert list(path.parent.iterdir()) == []  # no temporary file left


def test_os_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import brainmaps.cli.synth as synth

    target = str(tmp_path / "cohort" / "sub-0001_T1w.nii.gz")
    errors = [
        (OSError(errno.ENOSPC, "No space left on device", target), "no space left on device"),
        (PermissionError(errno.EACCES, "Permission denied", target), "permission denied"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", target), "is a folder"),
        (FileNotFoundError(errno.ENOENT, "No such file", target), "does not exist"),
    ]
    for error, words in errors:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(synth, "make_synthetic_cohort", fail)
        assert main(["synth", str(tmp_path / "cohort"), "--no-progress"]) == 2
        line = _error(capsys)
        assert words in line and "sub-0001_T1w.nii.gz" in line, line


# -- F. synth presets ------------------------------------------------------------------


def test_synth_presets(tmp_path, capsys):
    import json

    out = tmp_path / "easy"
    args = ["synth", str(out), "--subjects", "4", "--voxel-size", "6", "--no-progress"]
    assert main([*args, "--preset", "hippocampus", "--effect", "intensity"]) == 0
    config = json.loads((out / "dataset_description.json").read_text())["SynthConfig"]
    assert config["effect"] == "intensity" and config["effect_size"] == 0.3
    assert config["regions"] == ["left_hippocampus", "right_hippocampus"]
    assert main(["synth", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("easy", "default", "hard", "hippocampus"):
        assert f"{name} (" in text
