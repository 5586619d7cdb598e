"""The layer sweep and the ``layer="auto"`` rule of the CAM-type methods."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from brainmaps.analysis.localisation import localisation_run
from brainmaps.attribution import create_method
from brainmaps.attribution.cohort import explain_run
from brainmaps.attribution.grad_cam import auto_layer
from brainmaps.cli.main import main
from brainmaps.exceptions import ConfigError
from brainmaps.models.registry import create_model
from brainmaps.models.tracing import feature_layers
from brainmaps.steps.layers import layer_sweep

XIN_LAYERS = [f"features.block{b}.{kind}" for b in (1, 2, 3) for kind in ("relu", "pool")]


def _xin(shape):
    torch.manual_seed(0)
    return create_model("xin2019", input_shape=shape).eval(), torch.randn(1, 1, *shape)


def test_feature_layers_of_xin2019_are_its_activations_and_poolings_in_order():
    model, x = _xin((36, 44, 36))
    found = feature_layers(model, x)
    assert [name for name, _ in found] == XIN_LAYERS
    grids = dict(found)
    # valid 3x3x3 convolutions (-2) and 2x2x2 poolings (//2), per block
    assert grids["features.block1.relu"] == (34, 42, 34)
    assert grids["features.block2.relu"] == (15, 19, 15)
    assert grids["features.block2.pool"] == (7, 9, 7)
    assert grids["features.block3.relu"] == (5, 7, 5)


@pytest.mark.parametrize(
    ("shape", "min_voxels", "expected"),
    [
        ((36, 44, 36), 8, "features.block2.relu"),  # demo grid: block 3 keeps 5x7x5
        ((58, 70, 58), 8, "features.block3.relu"),  # Kan et al.'s grid: 11x14x11
        ((22, 26, 22), 8, "features.block2.relu"),  # the test grid: block 2 keeps 8x10x8
        ((22, 26, 22), 9, "features.block1.pool"),  # 10x12x10
        ((22, 26, 22), 64, "features.block1.relu"),  # none keeps 64: the first layer
    ],
)
def test_auto_layer_is_the_deepest_layer_keeping_enough_voxels_per_axis(
    shape, min_voxels, expected
):
    model, x = _xin(shape)
    assert auto_layer(model, x, min_voxels) == expected
    grids = dict(feature_layers(model, x))
    deeper = XIN_LAYERS[XIN_LAYERS.index(expected) + 1 :]
    assert all(min(grids[name]) < min_voxels for name in deeper)
    if expected != "features.block1.relu":
        assert min(grids[expected]) >= min_voxels


@pytest.mark.parametrize("method", ["grad_cam", "hires_cam", "layer_cam"])
def test_layer_auto_gives_the_maps_of_the_layer_it_names(method):
    model, _ = _xin((36, 44, 36))
    x = torch.randn(2, 1, 36, 44, 36)
    auto = create_method(method, model, layer="auto")
    named = create_method(method, model, layer="features.block2.relu")
    assert torch.equal(auto.attribute(x, target=1), named.attribute(x, target=1))
    assert auto.resolved_layer(x) == "features.block2.relu"


def test_the_sweep_pooled_auc_equals_localise_on_maps_made_at_that_layer(tiny_run, tmp_path):
    """Oracle: the sweep's pooled row is what explain + localise give at the same layer."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    layer = "features.block1.pool"
    out = layer_sweep(
        run_dir, ["hires_cam"], layers=[layer, "features.block2.relu"],
        faithfulness_subjects=1, progress=False,
    )  # fmt: skip
    table = pd.read_csv(out, sep="\t", dtype={"fold": str})
    assert set(table["fold"]) == {"0", "1", "2", "all"}
    assert len(table) == 2 * 4
    explain_run(run_dir, ["hires_cam"], layer=layer, progress=False)
    scores = pd.read_csv(localisation_run(run_dir, ["hires_cam"]), sep="\t")
    expected = scores.loc[scores["map"] == "conjoined", "roc_auc"].item()
    pooled = table[(table["fold"] == "all") & (table["layer"] == layer)]
    assert pooled["roc_auc"].item() == pytest.approx(expected, abs=1e-6)
    assert pooled["n_subjects"].item() == 40
    assert pooled["feature_grid"].item() == "10x12x10"
    per_fold = table[(table["fold"] != "all")]
    assert per_fold["n_faithfulness"].eq(1).all()
    for column in ["deletion", "deletion_random", "insertion", "insertion_random"]:
        assert per_fold[column].between(0, 1).all()
    # the run's own maps folder holds only what explain wrote
    assert sorted(p.name for p in (run_dir / "maps").iterdir()) == ["hires_cam"]


def test_the_sweep_refuses_methods_without_a_layer_and_unknown_layers(tiny_run):
    with pytest.raises(ConfigError, match="take no layer option"):
        layer_sweep(tiny_run, ["gradient"], progress=False)
    with pytest.raises(ConfigError, match=r"layers: .*features\.nope"):
        layer_sweep(tiny_run, ["grad_cam"], layers=["features.nope"], progress=False)
    with pytest.raises(ConfigError, match="faithfulness_subjects"):
        layer_sweep(tiny_run, ["grad_cam"], faithfulness_subjects=-1, progress=False)


def test_cli_layers_prints_the_pooled_rows(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    code = main(
        ["layers", str(run_dir), "--methods", "grad_cam", "--layers", "features.block2.relu",
         "--faithfulness-subjects", "0", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "features.block2.relu" in text and "layers.tsv" in text
    table = pd.read_csv(run_dir / "analysis" / "layers.tsv", sep="\t")
    assert np.isnan(table["deletion"]).all()


def test_the_sweep_refuses_cam_whose_map_exists_at_one_layer_only(tiny_run):
    with pytest.raises(ConfigError, match=r"\['cam'\] weigh the channels by the classifier"):
        layer_sweep(tiny_run, ["cam", "grad_cam"], progress=False)


@pytest.fixture(scope="module")
def two_channel_run(tiny_cohort, tmp_path_factory):
    from brainmaps.training.run import train_run
    from two_channels import two_channel_config, write_two_channel_table

    base = tmp_path_factory.mktemp("layers_two_channels")
    table = write_two_channel_table(tiny_cohort, base / "cohort", n_subjects=12)
    train_run(two_channel_config(table, base / "run", base / "cache"), progress=False)
    return base / "run"


def test_a_two_channel_run_is_swept_without_deletion_curves_unless_asked(two_channel_run):
    """Deletion curves take one channel (as brainmaps faithfulness): by default a
    multi-channel run is swept without them; asking for them names the flag."""
    out = layer_sweep(
        two_channel_run, ["hires_cam"], layers=["features.block2.relu"], progress=False
    )
    table = pd.read_csv(out, sep="\t", dtype={"fold": str})
    assert table["n_faithfulness"].eq(0).all() and table["deletion"].isna().all()
    assert table.loc[table["fold"] == "all", "n_subjects"].item() == 12
    with pytest.raises(ConfigError, match=r"--faithfulness-subjects\) is 1, but run .* 2 input"):
        layer_sweep(two_channel_run, ["hires_cam"], faithfulness_subjects=1, progress=False)
