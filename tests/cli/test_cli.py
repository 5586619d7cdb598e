"""The command line, run in-process: commands, config replay and one-line errors."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from brainmaps.cli.main import main
from tiny import TINY_CHANNELS, TINY_GRID


def _grid() -> str:
    return "x".join(map(str, TINY_GRID))


@pytest.fixture(scope="module")
def cli_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    config = base / "base.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"source": str(tiny_cohort), "target": "group"},
                "model": {"name": "xin2019", "options": {"channels": TINY_CHANNELS}},
                "training": {"batch_size": 4, "cache_dir": str(base / "cache")},
            }
        )
    )
    args = ["train", "--config", str(config), "--out", str(base / "run"), "--grid", _grid()]
    args += ["--folds", "2", "--epochs", "2", "--seed", "1", "--no-progress"]
    assert main(args) == 0
    return base / "run"


def test_train_writes_a_replayable_config(cli_run, capsys):
    written = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert written["training"]["folds"] == 2 and written["training"]["seed"] == 1
    assert written["preprocess"]["grid_shape"] == list(TINY_GRID)
    assert written["model"]["options"]["channels"] == TINY_CHANNELS
    # replaying the written config into the same folder resumes every fold
    assert main(["train", "--config", str(cli_run / "config.yaml"), "--no-progress"]) == 0
    assert "resumed: folds [0, 1]" in capsys.readouterr().out


def test_predict_writes_probabilities(cli_run, tiny_cohort, tmp_path):
    images = sorted(tiny_cohort.glob("sub-*/anat/*_T1w.nii.gz"))[:3]
    out = tmp_path / "preds.tsv"
    assert main(["predict", str(cli_run), *map(str, images), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    assert len(table) == 3 and (table["n_models"] == 2).all()
    assert ((table["p_control"] + table["p_patient"] - 1).abs() < 1e-5).all()
    assert set(table["predicted"]) <= {"control", "patient"}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_unknown_target_lists_columns(tiny_cohort, tmp_path, capsys):
    code = main(["train", str(tiny_cohort), "--target", "diagnosis", "--out", str(tmp_path / "r")])
    assert code == 2
    line = _error_line(capsys)
    assert "diagnosis" in line and "group" in line and "age" in line


def test_missing_source_is_one_line(tmp_path, capsys):
    code = main(["train", str(tmp_path / "nowhere"), "--target", "group"])
    assert code == 2
    assert "nowhere" in _error_line(capsys)


def test_predict_on_corrupt_image_is_one_line(cli_run, tiny_cohort, tmp_path, capsys):
    src = sorted(tiny_cohort.glob("sub-*/anat/*_T1w.nii.gz"))[0]
    bad = tmp_path / "broken_T1w.nii.gz"
    data = src.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "p.tsv"
    assert main(["predict", str(cli_run), str(bad), "--out", str(out)]) == 2
    assert "broken_T1w.nii.gz" in _error_line(capsys)
    assert not out.exists()


def test_predict_on_4d_image(cli_run, tiny_cohort, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    src = nib.load(sorted(tiny_cohort.glob("sub-*/anat/*_T1w.nii.gz"))[0])
    four = np.stack([src.get_fdata()] * 3, axis=-1)
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(four.astype("float32"), src.affine), path)
    assert main(["predict", str(cli_run), str(path)]) == 2
    assert "four_d.nii.gz" in _error_line(capsys)


def test_synth_command(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["synth", str(out), "--subjects", "4", "--voxel-size", "6", "--no-progress"]) == 0
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    assert len(table) == 4 and (out / "ground_truth_mask.nii.gz").is_file()


@pytest.mark.slow
def test_demo_command_small(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path / "d"), "--subjects", "12", "--grid", _grid()]
    assert main([*args, "--folds", "2", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "run folder" in out
    assert "attribution maps: " in out
    for method in ("grad_cam", "meaningful_perturbation", "occlusion", "lrp"):
        assert (tmp_path / "d" / "run" / "maps" / method / "mean_conjoined.nii.gz").is_file()
