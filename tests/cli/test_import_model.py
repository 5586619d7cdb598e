"""brainmaps import-model: a state_dict trained elsewhere as a run folder for predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainmaps.cli.main import main
from brainmaps.data.cohort import load_cohort
from brainmaps.data.preprocess import PreprocessConfig, preprocess_img
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import load_checkpoint, model_from_checkpoint
from brainmaps.run.folder import open_run
from brainmaps.training.ensembles import predict_run
from tiny import TINY_CHANNELS, TINY_GRID


def _kan_names(state: dict) -> dict:
    """brainmaps xin2019 names -> the Kan et al. layout (hidden<i>.0 conv, .1 BN, linear)."""
    return {
        key.replace("features.block", "hidden")
        .replace(".conv.", ".0.")
        .replace(".bn.", ".1.")
        .replace("classifier.fc.", "linear."): value
        for key, value in state.items()
    }


def _import(file: Path, out: Path, *extra: str) -> int:
    return main(
        ["import-model", str(file), "--model", "xin2019", "--grid", "x".join(map(str, TINY_GRID)),
         "--classes", "control,patient", "--options", f"{{channels: {TINY_CHANNELS}}}",
         "--out", str(out), *extra]
    )  # fmt: skip


@pytest.mark.parametrize("layout", ["brainmaps", "kan"])
def test_imported_model_predicts_as_the_original(tiny_run, tiny_cohort, tmp_path, layout):
    original, _meta = model_from_checkpoint(Path(tiny_run) / "fold-0" / "model.pt")
    state = original.state_dict()
    if layout == "kan":
        state = _kan_names(state)
        assert next(iter(state)) == "hidden1.0.weight" and "linear.bias" in state
    torch.save(state, tmp_path / "model.pth")
    assert _import(tmp_path / "model.pth", tmp_path / "run") == 0
    imported = load_checkpoint(tmp_path / "run" / "fold-0" / "model.pt")[1]["imported"]
    assert imported["matched_by"] == ("order" if layout == "kan" else "name")
    scans = load_cohort(tiny_cohort, "group").table["path"].tolist()[:3]
    table = predict_run(tmp_path / "run", scans, device="cpu")
    volumes = np.stack([preprocess_img(p, PreprocessConfig(grid_shape=TINY_GRID)) for p in scans])
    with torch.no_grad():
        expected = torch.softmax(original(torch.from_numpy(volumes)[:, None].float()), 1)
    np.testing.assert_allclose(
        table[["p_control", "p_patient"]].to_numpy(), expected.numpy(), rtol=1e-5, atol=1e-6
    )
    assert table["n_models"].tolist() == [1, 1, 1]
    with pytest.raises(ConfigError, match="import-model"):
        _ = open_run(tmp_path / "run").n_folds  # the steps that need a cohort refuse it


def test_mismatching_state_dicts_are_refused_naming_the_key(tiny_run, tmp_path, capsys):
    original, _ = model_from_checkpoint(Path(tiny_run) / "fold-0" / "model.pt")
    state = _kan_names(original.state_dict())
    state["linear.weight"] = torch.zeros(3, state["linear.weight"].shape[1])
    torch.save(state, tmp_path / "bad.pt")
    assert _import(tmp_path / "bad.pt", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "'linear.weight'" in err and "'classifier.fc.weight'" in err
    assert not (tmp_path / "run" / "config.yaml").exists()
    byname = original.state_dict()
    byname["classifier.fc.bias"] = torch.zeros(5)
    torch.save(byname, tmp_path / "bad2.pt")
    assert _import(tmp_path / "bad2.pt", tmp_path / "run2") == 2
    assert "'classifier.fc.bias'" in capsys.readouterr().err
    torch.save(original, tmp_path / "pickled.pt")  # a whole pickled model: never unpickled
    assert _import(tmp_path / "pickled.pt", tmp_path / "run3") == 2
    assert "Python objects" in capsys.readouterr().err
