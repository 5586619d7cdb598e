"""Tests of brainmaps.validation: parameter, path and image checks and their messages."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from brainmaps import validation
from brainmaps.exceptions import ConfigError, ImageError
from brainmaps.validation import (
    check_choice,
    check_float,
    check_fraction,
    check_img,
    check_int,
    check_output_dir,
    check_output_file,
    parse_list,
)


def test_check_int():
    assert check_int("epochs", 3, min=1) == 3 and check_int("epochs", np.int64(4)) == 4
    assert check_int("epochs", 5.0) == 5
    with pytest.raises(ConfigError, match=r"--epochs: expected an integer >= 1, got 0\."):
        check_int("epochs", 0, min=1, flag="--epochs")
    for bad in (2.5, True, "3", None):
        with pytest.raises(ConfigError, match=r"^epochs: expected an integer in \[1, 9\]"):
            check_int("epochs", bad, min=1, max=9)


def test_check_float_and_fraction():
    assert check_float("lr", 1e-3, min=0, min_open=True) == 1e-3
    with pytest.raises(ConfigError, match=r"lr: expected a number > 0, got 0\.0"):
        check_float("lr", 0.0, min=0, min_open=True)
    with pytest.raises(ConfigError, match="got nan"):
        check_float("lr", float("nan"))
    with pytest.raises(ConfigError, match="got 'fast'"):
        check_float("lr", "fast")
    assert check_fraction("val_fraction", 0.1) == 0.1
    assert check_fraction("p", 1.0, closed=True) == 1.0
    with pytest.raises(ConfigError, match=r"--val-fraction: expected a number in \(0, 1\)"):
        check_fraction("val_fraction", 1.0, flag="--val-fraction")


def test_check_choice():
    assert check_choice("task", "auto", ("auto", "regression")) == "auto"
    with pytest.raises(ConfigError, match=r"--task: expected one of auto, regression, got "):
        check_choice("task", "Auto", ("auto", "regression"), flag="--task")
    with pytest.raises(ConfigError, match="Did you mean 'auto'"):
        check_choice("task", "AUTO", ("auto", "regression"))


def test_parse_list():
    assert parse_list(None, "--methods") is None
    assert parse_list(" a, b,,a ", "--methods") == ["a", "b"]
    assert parse_list(["x", "y"], "--methods") == ["x", "y"]
    with pytest.raises(ConfigError, match=r"--methods: expected comma-separated names"):
        parse_list(" , ", "--methods")
    with pytest.raises(ConfigError, match=r"unknown name\(s\) c; choose from a, b"):
        parse_list("a,c", "--steps", choices=("a", "b"))


def test_output_paths(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert check_output_file(tmp_path / "new" / "deep" / "out.tsv", "--out").name == "out.tsv"
    assert check_output_dir(tmp_path / "new" / "run", "--out").name == "run"
    with pytest.raises(ConfigError, match=r"--out: .*file\.txt is a file, not a folder"):
        check_output_file(blocker / "out.tsv", "--out")
    with pytest.raises(ConfigError, match=r"--out: .*file\.txt is a file, not a folder"):
        check_output_dir(blocker / "a" / "b", "--out")
    with pytest.raises(ConfigError, match=r"--out: .* is a folder, expected a file name"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(ConfigError, match=r"--cache-dir: .*file\.txt is a file, expected a folder"):
        check_output_dir(blocker, "--cache-dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing created


def _write(path, data, dtype=None, affine=None):
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    if dtype is not None:
        img.set_data_dtype(dtype)
    nib.save(img, path)
    return path


def test_label_images_keep_integers(tmp_path):
    labels = np.zeros((6, 6, 6), np.int16)
    labels[2:4, 2:4, 2:4] = 7
    img = check_img(_write(tmp_path / "atlas.nii.gz", labels), "atlas_img", labels=True)
    assert img.get_fdata().max() == 7 and np.asarray(img.dataobj).dtype == np.int16
    stored_as_float = _write(tmp_path / "float.nii.gz", labels.astype(np.float32))
    data = np.asarray(check_img(stored_as_float, labels=True).dataobj)
    assert data.dtype == np.int32 and data.max() == 7
    with pytest.raises(ImageError, match=r"atlas_img: image .*prob\.nii\.gz holds non-integer"):
        check_img(_write(tmp_path / "prob.nii.gz", labels * 0.1), "atlas_img", labels=True)
    flat = check_img(_write(tmp_path / "zeros.nii.gz", np.zeros((4, 4, 4))), contrast=False)
    assert np.asarray(flat.dataobj).dtype == np.float32
    with pytest.raises(ImageError, match="is constant"):
        check_img(tmp_path / "zeros.nii.gz")


def test_header_larger_than_the_file(tmp_path):
    path = _write(tmp_path / "small.nii.gz", np.random.default_rng(0).random((8, 8, 8)))
    img = nib.load(path)
    header = img.header.copy()
    header.set_data_shape((2000, 2000, 2000))
    blob = header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes()
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(blob))
    with pytest.raises(ImageError, match=r"huge\.nii\.gz could not be read: the file is corrupt"):
        check_img(tmp_path / "huge.nii.gz")
    (tmp_path / "huge.nii").write_bytes(blob)
    with pytest.raises(ImageError, match=r"huge\.nii could not be read: .*truncated.*2000"):
        check_img(tmp_path / "huge.nii")


def test_more_than_the_available_memory(tmp_path, monkeypatch):
    path = _write(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((8, 8, 8)))
    monkeypatch.setattr(validation.images, "_available_memory", lambda: 1000)
    with pytest.raises(ImageError, match=r"scan\.nii\.gz is too large to load: .*only 1 kB"):
        check_img(path)
