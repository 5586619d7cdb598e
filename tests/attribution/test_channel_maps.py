"""Per-channel attribution maps: ``keep_channels`` of the gradient-type methods, and the
``maps/<method>/channel-<name>/`` maps of :func:`explain_run` on a two-channel run."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from brainmaps.attribution import create_method, list_methods
from brainmaps.attribution.base import get_method
from brainmaps.attribution.cohort import explain_run
from brainmaps.exceptions import ConfigError
from brainmaps.models.checkpoints import load_checkpoint, save_checkpoint
from brainmaps.run.folder import open_run
from brainmaps.training.run import train_run
from two_channels import CHANNELS, two_channel_config, write_two_channel_table

#: The methods that give one map per input channel, with options that keep them fast.
CHANNEL_METHODS = {
    "gradient": {},
    "guided_backprop": {},
    "smoothgrad": {"n_samples": 3},
    "integrated_gradients": {"n_steps": 4},
    "lrp": {},
}


def _reads_channel_1_only() -> nn.Module:
    """A small 2-channel CNN whose first convolution ignores input channel 0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv3d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    with torch.no_grad():
        model[0].weight[:, 0] = 0
    return model.eval()


def test_the_registry_marks_exactly_the_input_gradient_methods():
    marked = {name for name in list_methods() if get_method(name).channel_maps}
    assert marked == set(CHANNEL_METHODS)


@pytest.mark.parametrize("method", sorted(CHANNEL_METHODS))
def test_a_channel_the_model_ignores_gets_an_all_zero_map(method):
    model = _reads_channel_1_only()
    x = torch.randn(3, 2, 8, 8, 8)
    explainer = create_method(method, model, **CHANNEL_METHODS[method])
    kept = explainer.attribute(x, target=1, keep_channels=True)
    assert kept.shape == (3, 2, 8, 8, 8)
    assert torch.count_nonzero(kept[:, 0]) == 0
    assert torch.count_nonzero(kept[:, 1]) > 0
    summed = explainer.attribute(x, target=1)
    torch.testing.assert_close(kept.sum(dim=1), summed, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", sorted(CHANNEL_METHODS))
def test_one_channel_maps_are_the_default_maps(method):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6**3, 2))
    x = torch.randn(2, 1, 8, 8, 8)
    explainer = create_method(method, model.eval(), **CHANNEL_METHODS[method])
    kept = explainer.attribute(x, target=0, keep_channels=True)
    torch.testing.assert_close(kept[:, 0], explainer.attribute(x, target=0), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["grad_cam", "occlusion"])
def test_methods_without_channel_maps_refuse_keep_channels(method):
    model = _reads_channel_1_only()
    options = {"layer": "2"} if method == "grad_cam" else {}
    with pytest.raises(ConfigError, match="no per-channel maps"):
        create_method(method, model, **options).attribute(
            torch.randn(1, 2, 8, 8, 8), keep_channels=True
        )


# -- explain_run on a two-channel run -----------------------------------------------------

METHODS = ["gradient", "grad_cam", "guided_backprop"]


@pytest.fixture(scope="module")
def two_channel_run(tiny_cohort, tmp_path_factory):
    base = tmp_path_factory.mktemp("two_channel_maps")
    table = write_two_channel_table(tiny_cohort, base / "cohort")
    train_run(two_channel_config(table, base / "trained", base / "cache"), progress=False)
    return base / "trained"


@pytest.fixture(scope="module")
def explained(two_channel_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("explained") / "run"
    shutil.copytree(two_channel_run, run_dir)
    tables = explain_run(run_dir, METHODS, batch_size=8, device="cpu", progress=False)
    return run_dir, tables


def _load(path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_each_channel_gets_maps_and_class_means(explained):
    run_dir, tables = explained
    run = open_run(run_dir)
    layout = run.layout
    for method in ("gradient", "guided_backprop"):
        assert layout.map_channels(method) == sorted(CHANNELS)
        assert len(tables[method]) == len(run.table)
        for row in tables[method].to_dict("records"):
            summed = _load(layout.subject_map(method, row["subject"]))
            parts = [_load(layout.channel_subject_map(method, c, row["subject"])) for c in CHANNELS]
            assert parts[0].shape == run.grid.shape
            np.testing.assert_allclose(parts[0] + parts[1], summed, rtol=1e-5, atol=1e-8)
        for group in (*run.classes, "conjoined"):
            total = _load(layout.group_map(method, group))
            means = [_load(layout.channel_group_map(method, c, group)) for c in CHANNELS]
            np.testing.assert_allclose(means[0] + means[1], total, rtol=1e-4, atol=1e-8)
    assert layout.map_channels("grad_cam") == []  # feature maps have no input channels
    assert layout.group_map("grad_cam", "conjoined").is_file()


def test_a_missing_channel_map_is_made_again(explained):
    run_dir, _ = explained
    layout = open_run(run_dir).layout
    subject = open_run(run_dir).table["subject"].iloc[0]
    lost = layout.channel_subject_map("gradient", "wm", subject)
    before = _load(lost)
    lost.unlink()
    tables = explain_run(run_dir, ["gradient"], device="cpu", progress=False)
    assert lost.is_file() and len(tables["gradient"]) == len(open_run(run_dir).table)
    # remade alone instead of in a batch: with 2 threads the reductions differ in the last
    # bits (measured: 1 voxel of 12584 off by 1.4e-8, 1e-4 of the map's maximum)
    np.testing.assert_allclose(_load(lost), before, rtol=1e-5, atol=1e-3 * np.abs(before).max())


def test_a_model_that_ignores_channel_gm_gives_all_zero_gm_maps(two_channel_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(two_channel_run, run_dir, ignore=shutil.ignore_patterns("maps"))
    for path in open_run(run_dir).checkpoints():
        state, meta = load_checkpoint(path)
        first = next(k for k, v in state.items() if k.endswith("weight") and v.dim() == 5)
        state[first][:, 0] = 0
        save_checkpoint(path, state, meta)
    explain_run(run_dir, ["gradient"], device="cpu", progress=False)
    layout = open_run(run_dir).layout
    for subject in open_run(run_dir).table["subject"]:
        gm = _load(layout.channel_subject_map("gradient", "gm", subject))
        wm = _load(layout.channel_subject_map("gradient", "wm", subject))
        assert not gm.any() and wm.any()
        np.testing.assert_array_equal(_load(layout.subject_map("gradient", subject)), wm)
