"""Several images per subject: cohort channels (tables, BIDS), stacked cached volumes, a
two-channel training run and prediction with one file per channel."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

import brainmaps.data.cache as cache_mod
from brainmaps.cli.main import main
from brainmaps.data.cache import CachedVolumes, cache_volumes
from brainmaps.data.channels import channel_names
from brainmaps.data.cohort import load_cohort
from brainmaps.data.preprocess import PreprocessConfig, preprocess_img
from brainmaps.data.stacked import StackedVolumes, cache_channels, slot_columns
from brainmaps.exceptions import BrainmapsWarning, CohortError, ConfigError
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.run.config import DataConfig
from brainmaps.run.folder import open_run
from brainmaps.training.ensembles import predict_run
from brainmaps.training.run import train_run
from two_channels import CHANNELS, two_channel_config, write_two_channel_table

CONFIG = PreprocessConfig(grid_shape=(8, 10, 8))
COARSE = np.diag([24.0, 28.0, 24.0, 1.0])  # 8^3 voxels covering the whole MNI box
COARSE[:3, 3] = [-96.0, -130.0, -80.0]


def _nifti(path: Path, seed: int) -> str:
    data = np.random.default_rng(seed).uniform(1, 10, (8, 8, 8)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, COARSE), path)
    return str(path)


@pytest.fixture
def table(tmp_path) -> Path:
    """Four subjects with a ``path_gm`` and a ``path_wm`` image each."""
    rows = [
        {
            "subject": f"s{i}",
            "path_gm": _nifti(tmp_path / "img" / f"s{i}_gm.nii.gz", i),
            "path_wm": _nifti(tmp_path / "img" / f"s{i}_wm.nii.gz", 10 + i),
            "group": ["patient", "control"][i % 2],
        }
        for i in range(4)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.tsv", sep="\t", index=False)
    return tmp_path / "cohort.tsv"


def _bids(root: Path, images: dict[str, list[str]]) -> Path:
    """participants.tsv and ``sub-<id>/anat/sub-<id>_<suffix>.nii.gz`` per listed suffix."""
    root.mkdir(parents=True)
    ids = list(images)
    groups = [["patient", "control"][i % 2] for i in range(len(ids))]
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in ids], "group": groups})
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    for i, (sub, suffixes) in enumerate(images.items()):
        for j, suffix in enumerate(suffixes):
            _nifti(root / f"sub-{sub}" / "anat" / f"sub-{sub}_{suffix}.nii.gz", 10 * i + j)
    return root


# -- cohorts ---------------------------------------------------------------------------


def test_a_table_with_two_path_columns_has_two_channels(table):
    cohort = load_cohort(table, "group", path_col="path_gm,path_wm")
    assert cohort.channels == ("gm", "wm")
    assert list(cohort.table.columns[:4]) == ["subject", "session", "path", "path_wm"]
    gm, wm = cohort.channel_paths()
    assert gm == cohort.table["path"].tolist() and wm == cohort.table["path_wm"].tolist()
    assert all(Path(p).is_absolute() and p.endswith("_wm.nii.gz") for p in wm)
    assert "path_gm" not in cohort.table.columns  # consumed, as the one path column is


def test_one_channel_cohorts_are_unchanged(table):
    cohort = load_cohort(table, "group", path_col="path_gm")
    assert cohort.channels == ("gm",)
    assert list(cohort.table.columns) == [
        "subject",
        "session",
        "path",
        "label",
        "y",
        "site",
        "path_wm",
    ]
    assert cohort.channel_paths() == [cohort.table["path"].tolist()]


def test_a_missing_channel_image_names_the_subject_and_channel(table):
    frame = pd.read_csv(table, sep="\t")
    frame.loc[2, "path_wm"] = ""
    frame.to_csv(table, sep="\t", index=False)
    with pytest.raises(CohortError, match=r"s2 \(no wm\).*--drop-missing"):
        load_cohort(table, "group", path_col="path_gm,path_wm")
    with pytest.warns(BrainmapsWarning, match=r"dropped 1 subject.*s2 \(no wm\)"):
        cohort = load_cohort(table, "group", path_col="path_gm,path_wm", drop_missing=True)
    assert cohort.table["subject"].tolist() == ["s0", "s1", "s3"]


def test_channel_list_errors(table, tmp_path):
    with pytest.raises(CohortError, match="path_col='path_xx': no such column"):
        load_cohort(table, "group", path_col="path_gm,path_xx")
    with pytest.raises(ConfigError, match="names channel"):
        load_cohort(table, "group", path_col="path_gm,path_gm")
    with pytest.raises(CohortError, match=r"source is a table.*--path-col"):
        load_cohort(table, "group", suffix="T1w,FLAIR")
    bids = _bids(tmp_path / "bids", {"01": ["T1w"], "02": ["T1w"]})
    with pytest.raises(CohortError, match=r"BIDS folder.*--suffix"):
        load_cohort(bids, "group", path_col="a,b")
    with pytest.raises(ConfigError, match="not both"):
        DataConfig("x.tsv", "group", path_col="a,b", suffix="T1w,FLAIR")
    with pytest.raises(ConfigError, match="not usable in file names"):
        DataConfig("x.tsv", "group", suffix="T1w,")
    assert channel_names("path_gm,path_wm", "T1w") == ("gm", "wm")
    assert channel_names(None, "T1w") == ()


def test_bids_suffixes_are_channels_and_every_subject_needs_each(tmp_path):
    full = _bids(tmp_path / "full", {"01": ["T1w", "FLAIR"], "02": ["T1w", "FLAIR"]})
    cohort = load_cohort(full, "group", suffix="T1w,FLAIR")
    assert cohort.channels == ("T1w", "FLAIR")
    assert all(p.endswith("_FLAIR.nii.gz") for p in cohort.table["path_FLAIR"])
    assert all(p.endswith("_T1w.nii.gz") for p in cohort.table["path"])
    both = ["T1w", "FLAIR"]
    images = {"01": both, "02": ["T1w"], "03": both, "04": both}
    part = _bids(tmp_path / "part", images)
    with pytest.raises(CohortError, match=r"02 \(no FLAIR\).*--drop-missing"):
        load_cohort(part, "group", suffix="T1w,FLAIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BrainmapsWarning)
        cohort = load_cohort(part, "group", suffix="T1w,FLAIR", drop_missing=True)
    assert cohort.table["subject"].tolist() == ["01", "03", "04"]


# -- stacked volumes --------------------------------------------------------------------


@pytest.fixture
def counter(monkeypatch):
    """Count the files preprocessed by the cache (in-process, n_jobs=1)."""
    calls = []

    def counting(path, config):
        calls.append(Path(path).name)
        return preprocess_img(path, config)

    monkeypatch.setattr(cache_mod, "preprocess_img", counting)
    return calls


def test_stacked_volumes_reuse_the_per_file_cache(table, tmp_path, counter):
    cohort = load_cohort(table, "group", path_col="path_gm,path_wm")
    gm = cache_volumes(cohort.table["path"], CONFIG, tmp_path / "cache", progress=False)
    assert len(counter) == 4
    volumes = cache_channels(cohort.table, cohort.channels, CONFIG, tmp_path / "cache")
    assert sorted(counter[4:]) == sorted(Path(p).name for p in cohort.table["path_wm"])
    assert isinstance(volumes, StackedVolumes) and volumes.channels == CHANNELS
    assert volumes.shape == (4, 2, *CONFIG.grid_shape) and len(volumes) == 4
    np.testing.assert_array_equal(volumes.slots[:, 0], gm.slots)
    for i in range(4):
        item = volumes[i]
        assert item.dtype == np.float32 and item.shape == (2, *CONFIG.grid_shape)
        np.testing.assert_array_equal(item[0], gm[i])
        wm = preprocess_img(cohort.table["path_wm"][i], CONFIG)
        np.testing.assert_array_equal(item[1], wm)
    again = pickle.loads(pickle.dumps(volumes))
    np.testing.assert_array_equal(again[3], volumes[3])
    cache_channels(cohort.table, cohort.channels, CONFIG, tmp_path / "cache", progress=False)
    assert len(counter) == 8  # nothing preprocessed twice
    columns = slot_columns(volumes)
    assert list(columns) == ["cache_slot", "cache_slot_wm"]
    np.testing.assert_array_equal(columns["cache_slot_wm"], volumes.slots[:, 1])


def test_one_channel_store_is_the_plain_cache(table, tmp_path):
    cohort = load_cohort(table, "group", path_col="path_gm")
    volumes = cache_channels(cohort.table, cohort.channels, CONFIG, tmp_path / "c", progress=False)
    assert isinstance(volumes, CachedVolumes) and volumes.shape == (4, *CONFIG.grid_shape)
    assert list(slot_columns(volumes)) == ["cache_slot"]


# -- a two-channel run --------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_channel_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("two_channels")
    table = write_two_channel_table(tiny_cohort, base / "cohort")
    train_run(two_channel_config(table, base / "run", base / "cache"), progress=False)
    return base / "run", table


def test_a_two_channel_run_trains_a_two_channel_model(two_channel_run):
    run_dir, _ = two_channel_run
    state, meta = load_checkpoint(run_dir / "fold-0" / "model.pt")
    assert meta["model_config"]["in_channels"] == 2
    first = next(v for k, v in state.items() if k.endswith("weight") and v.dim() == 5)
    assert first.shape[1] == 2
    cohort = pd.read_csv(run_dir / "cohort.tsv", sep="\t")
    for column in ("path", "path_wm", "cache_slot", "cache_slot_wm"):
        assert column in cohort.columns
    assert cohort["path_wm"].str.endswith("_wm.nii.gz").all()
    run = open_run(run_dir)
    volumes = run.volumes()
    assert isinstance(volumes, StackedVolumes) and volumes.shape == (16, 2, 22, 26, 22)
    np.testing.assert_array_equal(volumes.slots[:, 1], cohort["cache_slot_wm"])
    assert not np.allclose(volumes[0][0], volumes[0][1])


def test_predict_takes_one_file_per_channel(two_channel_run, tmp_path, capsys):
    run_dir, table = two_channel_run
    rows = pd.read_csv(table, sep="\t").head(2)
    subjects = [(r["path_gm"], r["path_wm"]) for r in rows.to_dict("records")]
    result = predict_run(run_dir, subjects, device="cpu")
    assert result["path"].tolist() == rows["path_gm"].tolist()
    assert result["path_wm"].tolist() == rows["path_wm"].tolist()
    np.testing.assert_allclose(result[["p_control", "p_patient"]].sum(axis=1), 1, rtol=1e-5)
    assert (result["n_models"] == 2).all()
    with pytest.raises(ConfigError, match=r"subject 1 has 1 image\(s\) but the run has 2 channels"):
        predict_run(run_dir, [rows["path_gm"][0]])
    args = [",".join(s) for s in subjects]
    assert main(["predict", str(run_dir), *args, "--device", "cpu"]) == 0
    printed = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out), sep="\t")
    np.testing.assert_allclose(printed["p_patient"], result["p_patient"], atol=1e-4)
    assert main(["predict", str(run_dir), rows["path_gm"][0], "--device", "cpu"]) != 0
    assert "run has 2 channels (gm, wm)" in capsys.readouterr().err


def test_the_model_input_is_the_stacked_volume(two_channel_run):
    """The first conv layer sees both channels: changing channel 2 changes the output."""
    from brainmaps.models.checkpoints import model_from_checkpoint

    run_dir, _ = two_channel_run
    model, _ = model_from_checkpoint(run_dir / "fold-0" / "model.pt")
    x = torch.as_tensor(open_run(run_dir).volumes()[0])[None]
    with torch.no_grad():
        out, changed = model(x), model(torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1))
    assert not torch.allclose(out, changed)
