"""First-layer feature statistics: known filters, receptive-field masks, a whole run."""

from __future__ import annotations

import argparse
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from brainmaps.analysis.group_stats import count_larger
from brainmaps.cli import first_layer as cli
from brainmaps.exceptions import ConfigError, ShapeError
from brainmaps.models import create_model
from brainmaps.run.folder import open_run
from brainmaps.steps.first_layer import (
    feature_mask,
    first_layer,
    first_layer_activations,
    first_layer_run,
    first_layer_stats,
)


class _Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("the rest of the model must not run")


def _known_model(padding: int = 0) -> nn.Sequential:
    """Filter 0: identity (centre weight 1); filter 1: mean of the 27 neighbours."""
    conv = nn.Conv3d(1, 2, kernel_size=3, padding=padding)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 1, 1, 1] = 1.0
        conv.weight[1, 0] = 1.0 / 27
    return nn.Sequential(conv, nn.ReLU(), _Boom())


def test_constant_input_gives_its_intensity_and_zero_entropy():
    model = _known_model()
    volumes = [np.full((8, 8, 8), c, np.float32) for c in (1.0, 2.0, 3.0, -1.0)]
    mask = np.ones((8, 8, 8), bool)
    out = first_layer_stats(model, volumes, mask, batch_size=3)
    np.testing.assert_allclose(out["mean_activation"], [[1, 1], [2, 2], [3, 3], [0, 0]], 1e-6)
    np.testing.assert_array_equal(out["entropy"], 0.0)  # every map is constant
    with pytest.raises(ShapeError, match="mask of shape"):
        first_layer_stats(model, volumes, mask[1:])
    raw = first_layer_stats(model, volumes, mask, stage="conv")["mean_activation"]
    np.testing.assert_allclose(raw[3], [-1, -1], rtol=1e-6)  # before the ReLU


def test_entropy_of_a_two_valued_map_is_log_2():
    vol = np.zeros((8, 8, 8), np.float32)
    vol[4:] = 1.0  # after the 1-voxel crop: x = 1..3 are 0, x = 4..6 are 1
    out = first_layer_stats(_known_model(), [vol], np.ones(vol.shape, bool), n_bins=16)
    assert out["entropy"][0, 0] == pytest.approx(math.log(2))
    assert out["mean_activation"][0, 0] == pytest.approx(0.5)


def test_receptive_field_mask_alignment():
    conv = nn.Conv3d(1, 1, kernel_size=3)
    mask = np.zeros((10, 10, 10), bool)
    mask[3, 4, 5] = True
    assert np.argwhere(feature_mask(mask, conv, (8, 8, 8))).tolist() == [[2, 3, 4]]
    padded = nn.Conv3d(1, 1, kernel_size=3, padding=1)
    assert np.argwhere(feature_mask(mask, padded, (10, 10, 10))).tolist() == [[3, 4, 5]]
    strided = nn.Conv3d(1, 1, kernel_size=3, stride=2)
    mask2 = np.zeros((11, 11, 11), bool)
    mask2[3, 5, 7] = True  # centres 2 i + 1
    assert np.argwhere(feature_mask(mask2, strided, (5, 5, 5))).tolist() == [[1, 2, 3]]


def test_mean_is_taken_inside_the_cropped_mask_only():
    vol = np.full((10, 10, 10), 10.0, np.float32)
    vol[3:7, 3:7, 3:7] = 1.0
    mask = vol == 1.0
    out = first_layer_stats(_known_model(), [vol], mask)
    assert out["mean_activation"][0, 0] == pytest.approx(1.0)  # a 1-voxel shift adds 10s


def test_first_layer_finds_conv_and_activation_and_stops_early():
    model = create_model("xin2019", input_shape=(22, 22, 22), channels=[4, 8, 8])
    conv, name, _ = first_layer(model)
    assert conv is model.features.block1.conv and name == "features.block1.relu"
    assert first_layer(model, "conv")[1] == "features.block1.conv"
    x = torch.randn(2, 1, 22, 22, 22)
    model.eval()
    act = first_layer_activations(model, x)
    block = model.features.block1
    with torch.no_grad():
        expected = block.relu(block.bn(block.conv(x)))
    np.testing.assert_allclose(act, expected, atol=1e-6)
    known = _known_model()
    first_layer_activations(known, torch.ones(1, 1, 5, 5, 5))  # _Boom never runs
    assert not known[0]._forward_hooks and not known[1]._forward_hooks
    with pytest.raises(ConfigError, match="stage='conv'"):
        first_layer(nn.Sequential(nn.Conv3d(1, 1, 3)))
    with pytest.raises(ConfigError, match=r"no nn\.Conv3d"):
        first_layer(nn.Sequential(nn.ReLU()))
    with pytest.raises(ConfigError, match="stage must be"):
        first_layer(model, "bn")
    pooled = nn.Sequential(nn.Conv3d(1, 1, 3), nn.MaxPool3d(2), nn.ReLU())
    with pytest.raises(ShapeError, match="stage='conv'"):
        first_layer_activations(pooled, torch.ones(1, 1, 8, 8, 8))


def test_stats_match_a_literal_numpy_oracle():
    torch.manual_seed(0)
    model = create_model("xin2019", input_shape=(22, 22, 22), channels=[3, 4, 4]).eval()
    rng = np.random.default_rng(0)
    volumes = [rng.normal(size=(22, 22, 22)).astype(np.float32) for _ in range(3)]
    mask = np.zeros((22, 22, 22), bool)
    mask[4:18, 3:19, 5:20] = True
    out = first_layer_stats(model, volumes, mask, n_bins=10, batch_size=2)
    with torch.no_grad():
        act = model.features.block1.relu(
            model.features.block1.bn(
                model.features.block1.conv(torch.from_numpy(np.stack(volumes))[:, None])
            )
        ).numpy()
    vals = act[:, :, mask[1:-1, 1:-1, 1:-1]]  # (subjects, filters, voxels)
    np.testing.assert_allclose(out["mean_activation"], vals.mean(axis=2), rtol=1e-5)
    for f in range(vals.shape[1]):
        edges = np.linspace(vals[:, f].min(), vals[:, f].max(), 11)
        for s in range(3):
            counts = np.histogram(vals[s, f], bins=edges)[0]
            assert out["entropy"][s, f] == pytest.approx(stats.entropy(counts), abs=1e-3)


@pytest.fixture(scope="module")
def analysed(tiny_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("first_layer") / "run"
    shutil.copytree(tiny_run, run_dir)
    out = first_layer_run(run_dir, progress=False, device="cpu")
    return run_dir, out


def test_run_table_has_every_filter_fold_and_feature(analysed):
    run_dir, out = analysed
    run = open_run(run_dir)
    table = pd.read_csv(out, sep="\t", dtype={"fold": str})
    a, b = run.classes
    assert list(table.columns) == [
        "fold", "filter", "feature", "test", "statistic", "p", "q",
        f"mean_{a}", f"mean_{b}", "larger_in", "significant",
    ]  # fmt: skip
    n_filters = run.config.model.options["channels"][0]
    assert len(table) == run.n_folds * n_filters * 2
    counts = table.groupby(["fold", "feature"]).size()
    assert set(counts) == {n_filters}
    assert set(table["feature"]) == {"mean_activation", "entropy"}
    assert (table["q"] >= table["p"] - 1e-12).all()


def test_run_summary_counts_match_the_table(analysed):
    run_dir, out = analysed
    a, b = open_run(run_dir).classes
    table = pd.read_csv(out, sep="\t", dtype={"fold": str})
    summary = pd.read_csv(out.with_name("first_layer_summary.tsv"), sep="\t", dtype={"fold": str})
    assert list(summary.columns) == [
        "fold", "feature", "n_filters", "n_significant", f"larger_in_{a}", f"larger_in_{b}"
    ]  # fmt: skip
    for row in summary.itertuples(index=False):
        part = table[table["feature"] == row.feature]
        if row.fold != "all":
            part = part[part["fold"] == row.fold]
        expected = count_larger(part)
        assert row.n_filters == expected["n_filters"] == len(part)
        assert row.n_significant == expected["n_significant"] == int(part["significant"].sum())
        assert getattr(row, f"larger_in_{a}") == expected[a]
        assert getattr(row, f"larger_in_{b}") == expected[b]
    assert sorted(set(summary["fold"])) == ["0", "1", "2", "all"]


def test_cli_and_out_of_fold_subjects(analysed, tmp_path, capsys):
    run_dir = tmp_path / "run"  # a copy: the other tests read the fixture's default table
    shutil.copytree(analysed[0], run_dir)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["first-layer", str(run_dir), "--test", "ttest", "--subjects", "test", "--no-progress"]
    )
    assert args.run(args) == 0
    assert "first_layer.tsv" in capsys.readouterr().out
    table = pd.read_csv(run_dir / "analysis" / "first_layer.tsv", sep="\t")
    assert set(table["test"]) == {"ttest"}


def test_run_errors(analysed, tmp_path):
    run_dir, _ = analysed
    with pytest.raises(ConfigError, match="test must be"):
        first_layer_run(run_dir, test="chi2", progress=False)
    with pytest.raises(ConfigError, match="subjects"):
        first_layer_run(run_dir, subjects="train", progress=False)
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "fold-1" / "model.pt").unlink()
    with pytest.raises(ConfigError, match=r"fold\(s\) \[1\]"):
        first_layer_run(broken, progress=False)
