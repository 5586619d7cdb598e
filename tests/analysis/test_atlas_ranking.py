"""Atlas-region ranking: through the affines (not array shape), known answers, hemisphere
checks, shared and built-in atlases, the run-level table and the command line."""

from __future__ import annotations

import argparse
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from brainmaps.analysis.atlas import load_atlas
from brainmaps.analysis.builtin_atlases import load_builtin_atlas
from brainmaps.analysis.regions import (
    REGION_COLUMNS,
    check_hemispheres,
    format_top_regions,
    rank_regions,
    rank_run_regions,
)
from brainmaps.cli import regions as regions_cli
from brainmaps.data.preprocess import mni_grid
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ImageError
from brainmaps.run.folder import open_run
from conftest import shared_data

BOXES = {  # name: (x range, y range, z range) in world mm
    "Left_Box": ((-40, -10), (-20, 20), (-15, 15)),
    "Right_Box": ((10, 40), (-20, 20), (-15, 15)),
    "Frontal_Midline": ((-10, 10), (22, 38), (-15, 15)),
}


def _world(shape, affine):
    ijk = np.indices(shape).reshape(3, -1).T
    return nib.affines.apply_affine(affine, ijk).reshape(*shape, 3)


def _box_atlas(names=None, name="boxes"):
    """3 mm atlas with a flipped x axis (LAS) and a shifted origin; regions set in mm."""
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [44.0, -41.0, -35.0]
    xyz = _world((30, 30, 26), affine)
    data = np.zeros((30, 30, 26), np.int16)
    for label, (xr, yr, zr) in enumerate(BOXES.values(), start=1):
        inside = np.ones(data.shape, bool)
        for axis, (lo, hi) in enumerate((xr, yr, zr)):
            inside &= (xyz[..., axis] >= lo) & (xyz[..., axis] <= hi)
        data[inside] = label
    names = names or list(BOXES)
    table = {i: n for i, n in enumerate(names, start=1)}
    return load_atlas(nib.Nifti1Image(data, affine), table, name=name)


def _blob_map(centre, shape=(24, 24, 20), voxel=4.0, origin=(-46, -46, -38), sigma=6.0):
    """A Gaussian blob on a RAS grid (4 mm by default)."""
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = origin
    d2 = ((_world(shape, affine) - np.asarray(centre, float)) ** 2).sum(-1)
    return nib.Nifti1Image(np.exp(-d2 / (2 * sigma**2)).astype(np.float32), affine)


@pytest.mark.parametrize("grid", ["finer", "atlas", "map"])
def test_blob_ranks_its_region_first_through_the_affines(grid):
    atlas = _box_atlas()
    img = _blob_map((25, 0, 0))
    table = rank_regions(img, atlas, threshold="top2%", grid=grid).set_index("name")
    assert table.index[0] == "Right_Box"
    assert table.loc["Right_Box", "rank"] == 1
    assert table.loc["Right_Box", "fraction"] > 0.2
    assert table.loc["Left_Box", "fraction"] == 0
    assert table.loc["Right_Box", "fraction_norm"] == pytest.approx(1.0)
    assert table.loc["Right_Box", "mean_norm"] > 0.9
    assert table.loc["Right_Box", "centroid_x"] == pytest.approx(25, abs=2)
    assert table.loc["Right_Box", "hemisphere_from_x"] == "R"
    assert bool(table.loc["Right_Box", "hemisphere_ok"])
    assert pd.isna(table.loc["Frontal_Midline", "hemisphere_ok"])
    mirrored = rank_regions(_blob_map((-25, 0, 0)), atlas, threshold="top2%", grid=grid)
    assert mirrored["name"].iloc[0] == "Left_Box"


def test_by_array_shape_would_swap_the_sides():
    """The papers' resize-by-shape puts the blob in the left twin on a flipped atlas."""
    atlas = _box_atlas()
    img = _blob_map((25, 0, 0))
    zoom = np.asarray(img.shape) / np.asarray(atlas.data.shape)
    by_shape = ndimage.zoom(atlas.data, zoom, order=0)
    assert by_shape.shape == img.shape
    top = np.asarray(img.dataobj) >= np.quantile(np.asarray(img.dataobj), 0.98)
    hits = {n: top[by_shape == i].mean() for i, n in enumerate(BOXES, start=1)}
    assert hits["Left_Box"] > hits["Right_Box"]  # wrong side: what we must not do
    assert rank_regions(img, atlas, threshold="top2%")["name"].iloc[0] == "Right_Box"


def test_known_fractions_means_and_tie_break():
    labels = np.zeros((4, 4, 4), np.int16)
    labels[0], labels[1], labels[2], labels[3] = 1, 2, 3, 4
    values = np.zeros((4, 4, 4), np.float32)
    values[0] = 1.0  # region 1: all selected
    values[1, :2] = 1.0  # region 2: half selected, the other half negative
    values[1, 2:] = -1.0
    values[2, :2] = 3.0  # region 3: half selected, strong values (beats region 2 on ties)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas = load_atlas(nib.Nifti1Image(labels, affine), {1: "a", 2: "b", 3: "c", 4: "d"})
    img = nib.Nifti1Image(values, affine)
    table = rank_regions(img, atlas, threshold=0.5).set_index("label")
    assert table["rank"].to_dict() == {1: 1, 3: 2, 2: 3, 4: 4}
    np.testing.assert_allclose(table.loc[[1, 2, 3, 4], "fraction"], [1, 0.5, 0.5, 0])
    np.testing.assert_allclose(table.loc[[1, 2, 3, 4], "fraction_norm"], [0.5, 0.25, 0.25, 0])
    np.testing.assert_allclose(table.loc[[1, 2, 3, 4], "mean_value"], [1, 0.5, 1.5, 0])
    np.testing.assert_allclose(table.loc[[1, 2, 3, 4], "mean_norm"], [1 / 3, 1 / 6, 0.5, 0])
    assert (table["n_voxels"] == 16).all()
    signed = rank_regions(img, atlas, threshold=0.5, values="signed").set_index("label")
    assert signed.loc[2, "mean_value"] == 0
    absolute = rank_regions(img, atlas, threshold=0.5, values="absolute").set_index("label")
    assert absolute.loc[2, "fraction"] == 1  # the negative half counts by magnitude
    with pytest.raises(ConfigError, match="values"):
        rank_regions(img, atlas, values="negative")


def test_swapped_hemisphere_names_warn():
    atlas = _box_atlas(names=["Right_X", "Left_X", "Frontal"], name="swapped")
    with pytest.warns(BrainmapsWarning, match="'swapped'") as record:
        table = check_hemispheres(atlas)
    message = str(record[0].message)
    assert "Left_X (x = +24.5 mm)" in message and "Right_X (x = -25.0 mm)" in message
    ok = table.set_index("name")["hemisphere_ok"]
    assert not ok["Left_X"] and not ok["Right_X"] and pd.isna(ok["Frontal"])
    with pytest.warns(BrainmapsWarning, match="Left_X"):
        ranked = rank_regions(_blob_map((25, 0, 0)), atlas, threshold="top2%")
    assert ranked["name"].iloc[0] == "Left_X"
    assert not bool(ranked["hemisphere_ok"].iloc[0])


def _sphere_map(centre, radius, grid):
    xyz = _world(grid.shape, grid.affine)
    d = np.linalg.norm(xyz - np.asarray(centre, float), axis=-1)
    data = np.where(d <= radius, 2.0 - d / radius, 0.0).astype(np.float32)
    return nib.Nifti1Image(data, grid.affine)


@pytest.mark.parametrize(
    ("image", "table", "centre", "expected", "twin"),
    [
        # left hippocampus in MNI space (Brainnetome splits it into rHipp / cHipp)
        ("brainnetome246_1.25mm.nii.gz", "brainnetome246.tsv", (-26, -20, -14), "Hipp_L", "R"),
        # posterior limb of the left internal capsule
        (
            "jhu-icbm-dti-81_1mm.nii.gz",
            "jhu-icbm-dti-81.tsv",
            (-21, -13, 8),
            "L_Internal_Capsule_Posterior_Limb",
            "R",
        ),
    ],
)
def test_shared_atlas_blob_at_known_mni_coordinate(image, table, centre, expected, twin):
    atlas = load_atlas(shared_data("atlases", image), shared_data("atlases", table))
    grid = mni_grid((91, 109, 91))  # 2 mm MNI grid
    img = _sphere_map(centre, 5.0, grid)
    ranked = rank_regions(img, atlas, threshold=0.5, grid="map")
    assert ranked["name"].iloc[0].endswith(expected), ranked.head(3)
    assert ranked.loc[ranked["fraction"] > 0, "hemisphere"].isin(["L", ""]).all()


def test_builtin_aal_ranks_left_hippocampus():
    grid = mni_grid((61, 73, 61))  # 3 mm
    img = _sphere_map((-28, -22, -12), 6.0, grid)
    ranked = rank_regions(img, load_builtin_atlas("aal"), threshold=0.5)
    assert ranked["name"].iloc[0] == "Hippocampus_L", ranked.head(3)
    assert ranked.set_index("name").loc["Hippocampus_R", "fraction"] == 0


@pytest.fixture(scope="module")
def run_with_maps(tiny_run, tmp_path_factory):
    """A copy of ``tiny_run`` with hand-made class-mean maps (blob in Right_Box)."""
    run_dir = tmp_path_factory.mktemp("regions") / "run"
    shutil.copytree(tiny_run, run_dir)
    run = open_run(run_dir)
    grid = run.grid
    for method, centre in (("grad_cam", (25, 0, 0)), ("gradient", (-25, 0, 0))):
        folder = run_dir / "maps" / method
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "maps.tsv").write_text("subject\tsession\tfold\tlabel\texplained\tfile\n")
        img = _sphere_map(centre, 20.0, grid)
        for name in [*run.classes, "conjoined"]:
            nib.save(img, folder / f"mean_{name}.nii.gz")
    atlas_dir = tmp_path_factory.mktemp("atlas")
    atlas = _box_atlas()
    nib.save(atlas.img, atlas_dir / "boxes.nii.gz")
    (atlas_dir / "boxes.tsv").write_text(
        "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in enumerate(BOXES, start=1))
    )
    return run_dir, atlas_dir, run.classes


def test_run_level_table(run_with_maps):
    run_dir, atlas_dir, classes = run_with_maps
    path = rank_run_regions(run_dir, atlas_dir / "boxes.nii.gz", atlas_dir / "boxes.tsv")
    assert path == run_dir / "analysis" / "regions_boxes.tsv"
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns) == list(REGION_COLUMNS)
    assert len(table) == 2 * (len(classes) + 1) * len(BOXES)
    assert list(dict.fromkeys(table["map"])) == ["conjoined", *classes]
    assert (table["threshold"] == "top10%").all()
    for (method, _), rows in table.groupby(["method", "map"]):
        assert rows["rank"].tolist() == [1, 2, 3]
        assert rows["name"].iloc[0] == ("Right_Box" if method == "grad_cam" else "Left_Box")
        assert rows["fraction_norm"].sum() == pytest.approx(1.0)
    top = rank_run_regions(run_dir, atlas_dir / "boxes.nii.gz", methods=["gradient"], top=1)
    short = pd.read_csv(top, sep="\t")
    assert short["name"].tolist() == ["Left_Box"] * (len(classes) + 1)
    with pytest.raises(ConfigError, match="no maps"):
        rank_run_regions(run_dir, atlas_dir / "boxes.nii.gz", methods=["occlusion"])


def _cli(*argv):
    parser = argparse.ArgumentParser()
    regions_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["regions", *map(str, argv)])
    return args.run(args)


def test_cli_prints_top_regions_and_rejects_bad_inputs(run_with_maps, tmp_path, capsys):
    run_dir, atlas_dir, _ = run_with_maps
    atlas = atlas_dir / "boxes.nii.gz"
    assert _cli(run_dir, "--atlas", atlas, "--labels", atlas_dir / "boxes.tsv", "--top", 2) == 0
    out = capsys.readouterr().out
    assert "grad_cam: top regions of the conjoined map" in out
    assert out.index("Right_Box") < out.index("gradient:")
    assert str(run_dir / "analysis" / "regions_boxes.tsv") in out
    with pytest.raises(ConfigError, match="without --atlas"):
        _cli(run_dir, "--labels", atlas_dir / "boxes.tsv")
    with pytest.raises(ConfigError, match=r"--atlas: .*missing\.nii\.gz does not exist"):
        _cli(run_dir, "--atlas", tmp_path / "missing.nii.gz")
    with pytest.raises(ConfigError, match="not a built-in atlas"):
        _cli(run_dir, "--builtin", "nope")
    bad_table = tmp_path / "bad.tsv"
    bad_table.write_text("id\tregion\n1\tLeft_Box\n")
    with pytest.raises(ConfigError, match=r"bad\.tsv.*'index' and 'name'"):
        _cli(run_dir, "--atlas", atlas, "--labels", bad_table)
    floats = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), np.eye(4)), floats)
    with pytest.raises(ImageError, match=r"float\.nii\.gz.*non-integer"):
        _cli(run_dir, "--atlas", floats, "--labels", atlas_dir / "boxes.tsv")


def test_format_top_regions():
    table = rank_regions(_blob_map((25, 0, 0)), _box_atlas(), threshold="top2%")
    text = format_top_regions(table, top=2)
    lines = text.splitlines()
    assert len(lines) == 3 and "Right_Box" in lines[1] and "fraction_norm" in lines[0]
