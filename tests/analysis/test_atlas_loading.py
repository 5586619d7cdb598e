"""Loading atlases: label formats, validation, built-in and shared atlases, resampling."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmaps.analysis.atlas import (
    atlas_on_grid,
    load_atlas,
    parse_hemisphere,
    read_labels,
    region_centroids,
)
from brainmaps.analysis.builtin_atlases import get_atlas, list_builtin_atlases, load_builtin_atlas
from brainmaps.analysis.regions import check_hemispheres
from brainmaps.exceptions import BrainmapsWarning, ConfigError, ImageError
from conftest import shared_data


def _atlas_img(data, affine=None):
    return nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)


def _three_labels():
    data = np.zeros((6, 6, 6), dtype=np.int16)
    data[:2] = 1
    data[2:4] = 2
    data[4:] = 5
    return _atlas_img(data)


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("Precentral_L", "L"),
        ("A8m_R", "R"),
        ("Left-Hippocampus", "L"),
        ("Right_Frontal_Pole", "R"),
        ("ctx-lh-insula", "L"),
        ("ctx-rh-insula", "R"),
        ("lh_superior", "L"),
        ("G_Frontal_Sup-1-L", "L"),
        ("R_Corticospinal_Tract", "R"),
        ("LeftAmygdala", "L"),
        ("Vermis_4_5", ""),
        ("Brain-Stem", ""),
        ("Lingual", ""),
        ("Rectus_R", "R"),
        ("Left_and_Right", ""),
    ],
)
def test_parse_hemisphere(name, side):
    assert parse_hemisphere(name) == side


def test_tsv_csv_lut_and_dict_labels_read_the_same(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_text("Index\tName\n1\tPrecentral_L\n2\tPrecentral_R\n0\tBackground\n")
    csv = tmp_path / "a.csv"
    csv.write_text("name,INDEX\nPrecentral_L,1\nPrecentral_R,2\n")
    lut = tmp_path / "lut.txt"
    lut.write_text(
        "# FreeSurfer colour table\n#No. Label Name: R G B A\n0 Unknown 0 0 0 0\n\n"
        "1   Precentral_L   70 130 180 0\n2 Precentral_R 245 245 245 0\n"
    )
    for source in (tsv, csv, lut, {1: "Precentral_L", 2: "Precentral_R"}):
        table = read_labels(source)
        assert table["index"].tolist() == [1, 2], source
        assert table["name"].tolist() == ["Precentral_L", "Precentral_R"]
        assert table["hemisphere"].tolist() == ["L", "R"]


def test_hemisphere_column_overrides_the_name(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("index\tname\themisphere\n1\tA1\tleft\n2\tA2\tR\n3\tA3\tmidline\n")
    assert read_labels(path)["hemisphere"].tolist() == ["L", "R", "midline"]


def test_label_table_errors_name_the_file(tmp_path):
    bad = tmp_path / "regions.tsv"
    bad.write_text("id\tregion\n1\tfoo\n")
    with pytest.raises(ConfigError, match=r"regions\.tsv.*'index' and 'name'"):
        read_labels(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text("index\tname\n1\ta\n1\tb\n")
    with pytest.raises(ConfigError, match=r"dup\.tsv.*more than once"):
        read_labels(dup)
    frac = tmp_path / "frac.csv"
    frac.write_text("index,name\n1.5,a\n")
    with pytest.raises(ConfigError, match=r"frac\.csv.*non-integer"):
        read_labels(frac)
    with pytest.raises(ConfigError, match="does not exist"):
        read_labels(tmp_path / "missing.tsv")


def test_non_integer_atlas_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "prob.nii.gz"
    nib.save(_atlas_img(np.full((4, 4, 4), 0.3, dtype=np.float32)), path)
    with pytest.raises(ImageError, match=r"prob\.nii\.gz.*non-integer"):
        load_atlas(path, {1: "a"})
    nib.save(_atlas_img(np.zeros((4, 4, 4, 3), dtype=np.int16)), path)
    with pytest.raises(ImageError, match="4D probabilistic"):
        load_atlas(path, {1: "a"})
    with pytest.raises(ImageError, match="does not exist"):
        load_atlas(tmp_path / "nope.nii.gz")


def test_integer_valued_floats_and_negative_background_are_accepted():
    data = _three_labels().get_fdata().astype(np.float32)
    data[0, 0, 0] = -1
    atlas = load_atlas(_atlas_img(data), {1: "a", 2: "b", 5: "c"}, name="x")
    assert atlas.labels["index"].tolist() == [1, 2, 5]
    assert atlas.data[0, 0, 0] == 0 and atlas.data.dtype == np.int32


def test_unnamed_and_absent_labels_warn():
    with pytest.warns(BrainmapsWarning) as record:
        atlas = load_atlas(_three_labels(), {1: "a", 2: "b", 9: "ghost"}, name="toy")
    text = " ".join(str(w.message) for w in record)
    assert "[5]" in text and "label_<n>" in text and "[9]" in text and "'toy'" in text
    assert atlas.labels["name"].tolist() == ["a", "b", "label_5"]
    with pytest.raises(ConfigError, match="none of the labels"):
        load_atlas(_three_labels(), {7: "a", 8: "b"})


def test_labels_found_next_to_the_image(tmp_path):
    nib.save(_three_labels(), tmp_path / "toy.nii.gz")
    (tmp_path / "toy.tsv").write_text("index\tname\n1\ta_L\n2\tb_R\n5\tc\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas = load_atlas(tmp_path / "toy.nii.gz")
    assert atlas.name == "toy"
    assert atlas.labels["hemisphere"].tolist() == ["L", "R", ""]
    with pytest.warns(BrainmapsWarning, match="no labels table"):
        load_atlas(_three_labels())


def test_labels_without_atlas_is_an_error():
    with pytest.raises(ConfigError, match="without an atlas"):
        get_atlas(None, {1: "a"})
    with pytest.raises(ConfigError, match="not built in"):
        load_builtin_atlas("nonexistent")


def test_atlas_on_grid_goes_through_the_affines():
    # Atlas: 3 mm voxels, x axis flipped (LAS), shifted origin. Target: 4 mm RAS.
    rng = np.random.default_rng(0)
    data = rng.integers(0, 6, size=(20, 18, 16)).astype(np.int16)
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [28.0, -25.0, -20.0]
    atlas = load_atlas(_atlas_img(data, affine), {i: f"r{i}" for i in range(1, 6)})
    target_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    target_affine[:3, 3] = [-30.0, -30.0, -24.0]
    target = _atlas_img(np.zeros((16, 15, 13), np.float32), target_affine)
    out = atlas_on_grid(atlas, target)
    # Oracle: each target voxel centre -> world -> the atlas voxel containing it.
    ijk = np.indices(target.shape).reshape(3, -1).T
    src = nib.affines.apply_affine(np.linalg.inv(affine) @ target_affine, ijk)
    src = np.rint(src).astype(int)
    inside = np.all((src >= 0) & (src < data.shape), axis=1)
    expected = np.zeros(len(ijk), np.int16)
    expected[inside] = data[tuple(src[inside].T)]
    assert out.dtype == np.int32 and out.shape == target.shape
    np.testing.assert_array_equal(out.ravel(), expected)
    assert (out.ravel() == data[:16, :15, :13].ravel()).mean() < 0.5  # not by array shape


def test_region_centroids_are_in_world_mm():
    data = np.zeros((10, 4, 4), np.int16)
    data[1:3] = 1  # voxels 1, 2 -> centre 1.5
    affine = np.diag([-2.0, 1.0, 1.0, 1.0])
    affine[0, 3] = 10.0
    atlas = load_atlas(_atlas_img(data, affine), {1: "a"})
    table = region_centroids(atlas)
    assert table.loc[0, "centroid_x"] == pytest.approx(10.0 - 2.0 * 1.5)
    assert table.loc[0, "n_voxels"] == 32


def test_builtin_atlases_are_listed_and_aal_is_aal2():
    names = list_builtin_atlases()
    assert {"aal", "desikan_killiany", "harvard_oxford"} <= set(names)
    aal = load_builtin_atlas("aal")
    assert len(aal.labels) == 120  # AAL2 (AAL1 has 116)
    assert {"OFCmed_L", "Hippocampus_L", "Hippocampus_R"} <= set(aal.labels["name"])
    assert get_atlas() is aal


def _assert_sides_agree(atlas, min_sided):
    table = check_hemispheres(atlas, warn=False)
    sided = table[table["hemisphere"].isin(["L", "R"])]
    assert len(sided) >= min_sided
    left = sided["hemisphere"] == "L"
    assert (sided.loc[left, "centroid_x"] < 0).all(), sided.loc[left & (sided.centroid_x >= 0)]
    assert (sided.loc[~left, "centroid_x"] > 0).all(), sided.loc[~left & (sided.centroid_x <= 0)]
    assert sided["hemisphere_ok"].all()
    return table


@pytest.mark.parametrize("name", ["aal", "aicha", "desikan_killiany", "destrieux", "marsatlas"])
def test_builtin_left_right_names_match_centroid_sides(name):
    _assert_sides_agree(load_builtin_atlas(name), min_sided=90)


def test_builtin_probabilistic_atlases_keep_their_index_convention():
    # labels_harvard_oxford.csv starts at index 0 = volume 0 = Left_Frontal_Pole: an
    # off-by-one would name each region after its right twin and fail the side check.
    atlas = load_builtin_atlas("harvard_oxford")
    table = _assert_sides_agree(atlas, min_sided=100).set_index("name")
    assert table.loc["Left_Frontal_Pole", "label"] == 1
    assert table.loc["Left_Frontal_Pole", "centroid_y"] > 40
    hipp = table.loc["Left_Hippocampus", ["centroid_x", "centroid_y", "centroid_z"]]
    assert np.allclose(hipp.to_numpy(float), [-25, -22, -13], atol=6)


@pytest.mark.slow
def test_builtin_juelich_sides():
    _assert_sides_agree(load_builtin_atlas("juelich"), min_sided=100)


@pytest.mark.parametrize(
    ("image", "table", "n_regions", "n_sided"),
    [
        ("brainnetome246_1.25mm.nii.gz", "brainnetome246.tsv", 246, 246),
        ("jhu-icbm-dti-81_1mm.nii.gz", "jhu-icbm-dti-81.tsv", 48, 42),
    ],
)
def test_shared_atlases_load_with_correct_sides(image, table, n_regions, n_sided):
    atlas = load_atlas(shared_data("atlases", image), shared_data("atlases", table))
    assert len(atlas.labels) == n_regions
    labels = pd.read_csv(shared_data("atlases", table), sep="\t")
    assert set(atlas.labels["name"]) == set(labels["name"])
    _assert_sides_agree(atlas, min_sided=n_sided)
