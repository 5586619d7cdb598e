"""Tests of checkpoint saving and loading (weights_only-safe)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.models.checkpoints import (
    load_checkpoint,
    model_from_checkpoint,
    plain_metadata,
    save_checkpoint,
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = create_model("xin2019", input_shape=(22, 22, 22), channels=(2, 4, 4))
    net.train()
    net(torch.randn(2, 1, 22, 22, 22))  # update BatchNorm running stats
    return net.eval()


def metadata(model) -> dict:
    return {
        "model": "xin2019",
        "model_config": model.config,
        "classes": ("CN", "AD"),
        "fold": np.int64(3),
        "best_val": np.float32(0.25),
        "affine": np.eye(2),
        "source": Path("/data/x.nii.gz"),
        "nested": {"flags": (True, None, 1.5)},
    }


def test_round_trip(tmp_path, model):
    path = save_checkpoint(tmp_path / "fold-0" / "model.pt", model, metadata(model))
    state, meta = load_checkpoint(path)
    reference = model.state_dict()
    assert list(state) == list(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    assert meta["classes"] == ["CN", "AD"]
    assert meta["fold"] == 3 and type(meta["fold"]) is int
    assert meta["best_val"] == 0.25 and type(meta["best_val"]) is float
    assert meta["affine"] == [[1.0, 0.0], [0.0, 1.0]]
    assert meta["source"] == "/data/x.nii.gz"
    assert meta["nested"] == {"flags": [True, None, 1.5]}
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp files left


def test_file_loads_with_weights_only(tmp_path, model):
    path = save_checkpoint(tmp_path / "model.pt", model.state_dict(), metadata(model))
    payload = torch.load(path, weights_only=True, map_location="cpu")
    assert set(payload) == {"state_dict", "metadata"}


def test_model_from_checkpoint_predicts_identically(tmp_path, model):
    path = save_checkpoint(tmp_path / "model.pt", model, metadata(model))
    clone, meta = model_from_checkpoint(path)
    assert not clone.training
    assert meta["model"] == "xin2019"
    x = torch.randn(3, 1, 22, 22, 22)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


def test_missing_and_corrupt_files(tmp_path, model):
    with pytest.raises(ConfigError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match=r"garbage\.pt cannot be read.*corrupt"):
        load_checkpoint(garbage)
    good = save_checkpoint(tmp_path / "good.pt", model, metadata(model))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"truncated\.pt cannot be read"):
        model_from_checkpoint(truncated)


def test_foreign_files_are_rejected(tmp_path, model):
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ConfigError, match="not a brainmaps checkpoint"):
        load_checkpoint(bare)
    no_model = save_checkpoint(tmp_path / "no_model.pt", model, {"fold": 0})
    with pytest.raises(ConfigError, match="model_config"):
        model_from_checkpoint(no_model)
    wrong = save_checkpoint(
        tmp_path / "wrong.pt", model, {"model": "xin2019", "model_config": {"channels": [4, 4, 4]}}
    )
    with pytest.raises(ConfigError, match="do not fit"):
        model_from_checkpoint(wrong)


def test_unsafe_metadata_is_refused_and_nothing_written(tmp_path, model):
    path = tmp_path / "model.pt"
    with pytest.raises(ConfigError, match=r"metadata\['extra'\]\[1\] is a set"):
        save_checkpoint(path, model, {"extra": [1, {2}]})
    with pytest.raises(ConfigError, match="non-string key"):
        save_checkpoint(path, model, {1: "a"})
    assert list(tmp_path.iterdir()) == []


def test_plain_metadata_converts_numpy():
    out = plain_metadata({"a": np.arange(3, dtype=np.int32), "b": np.bool_(True)})
    assert out == {"a": [0, 1, 2], "b": True}
    assert type(out["a"][0]) is int and type(out["b"]) is bool
