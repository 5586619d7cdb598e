"""Tests of the synthetic cohorts: output layout, determinism and the planted effects."""

from __future__ import annotations

import json
import math
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import datasets, image
from scipy import ndimage, stats

from brainmaps.data import synthetic
from brainmaps.data._regions import load_template_space, radial_warp, region_distance
from brainmaps.data.synthetic import (
    DEFAULT_EFFECT_SIZE,
    SynthConfig,
    list_regions,
    make_synthetic_cohort,
    simulate_subject,
)
from brainmaps.exceptions import BrainmapsWarning, ConfigError

SMALL = {"n_subjects": 8, "voxel_size": 4.0, "progress": False}
# The settings SynthConfig() planted before version 0.4 (the "hippocampus" preset): the
# tests of the simulator pass them explicitly.
HIPPO = {"regions": synthetic.HIPPOCAMPI}
ATROPHY = {"effect": "atrophy", **HIPPO}
# Few subjects need little nuisance for group statistics to be meaningful.
CLEAN = {"bias_field": 0.0, "deformation_mm": 1.0, "age_effect": 0.2, "voxel_size": 4.0}
CONTROL = {"group": "control", "age": 50.0, "sex": "F", "site": "site1"}


def _load(path):
    return np.asarray(nib.load(path).dataobj)


def _stack(out):
    table = pd.read_csv(out / "participants.tsv", sep="\t")
    images = [_load(out / p / "anat" / f"{p}_T1w.nii.gz") for p in table.participant_id]
    return table, np.stack(images).astype(np.float64)


def _far_from(config, space, margin):
    """Brain voxels farther than radius + margin from every group and age region."""
    names = config.regions + config.age_regions
    far = np.ones(space.shape, dtype=bool)
    for name in names:
        region = synthetic.get_region(name)
        far &= region_distance(space, region) > region.radius + margin
    return far & (space.brain >= 0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "cohort"
    return make_synthetic_cohort(out, seed=1, **SMALL, **ATROPHY)


@pytest.fixture(scope="module")
def clean_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "cohort"
    return make_synthetic_cohort(
        out, n_subjects=16, effect="intensity", effect_size=0.3, progress=False, **CLEAN, **HIPPO
    )


def test_regions_table():
    names = list_regions()
    assert names == sorted(names) and len(names) >= 12
    assert {"left_hippocampus", "right_hippocampus", "precuneus"} <= set(names)
    space = load_template_space(4.0)
    for name in names:  # every centre lies in the template brain
        region = synthetic.get_region(name)
        ijk = np.round(space.world_to_voxel(np.array(region.centre))).astype(int)
        assert space.brain[tuple(ijk)] >= 0.5, name


def test_config_defaults_and_round_trip():
    config = SynthConfig(effect="atrophy")
    assert config.effect_size == DEFAULT_EFFECT_SIZE["atrophy"]
    assert SynthConfig(effect="intensity").effect_size == DEFAULT_EFFECT_SIZE["intensity"]
    assert SynthConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert SynthConfig(regions=["precuneus"]).regions == ("precuneus",)
    assert SynthConfig(regions="precuneus").regions == ("precuneus",)


def test_default_is_the_demo_effect_and_presets_are_valid():
    config = SynthConfig()  # the demo's: a 30 % intensity decrease in 5 regions
    assert (config.effect, config.effect_size, len(config.regions)) == ("intensity", 0.3, 5)
    assert SynthConfig(**synthetic.SYNTH_PRESETS["default"]) == config
    assert set(synthetic.PRESET_DIFFICULTY) == set(synthetic.SYNTH_PRESETS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sizes = [SynthConfig(**p).effect_size for p in synthetic.SYNTH_PRESETS.values()]
    assert sizes[:3] == sorted(sizes[:3], reverse=True)  # easy, default, hard


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_subjects": 1}, "n_subjects"),
        ({"n_subjects": 2.5}, "n_subjects"),
        ({"n_subjects": True}, "n_subjects"),
        ({"seed": -1}, "seed"),
        ({"effect": "shrink"}, "effect"),
        ({"effect_size": -0.1}, "effect_size"),
        ({"effect_size": 0.6, "effect": "atrophy"}, "effect_size"),
        ({"effect_size": math.nan}, "effect_size"),
        ({"regions": ("nowhere",)}, "regions"),
        ({"regions": ()}, "regions"),
        ({"regions": ("precuneus", "precuneus")}, "regions"),
        ({"age_regions": ("left_hippocampus",)}, "age_regions"),
        ({"n_sites": 0}, "n_sites"),
        ({"n_sites": 5, "n_subjects": 4}, "n_sites"),
        ({"voxel_size": 0.5}, "voxel_size"),
        ({"noise": -0.1}, "noise"),
        ({"age_range": (60, 20)}, "age_range"),
        ({"age_range": "old"}, "age_range"),
        ({"deformation_mm": "big"}, "deformation_mm"),
        ({"bias_field": 2.0}, "bias_field"),
    ],
)
def test_invalid_parameters(kwargs, name):
    with pytest.raises(ConfigError, match=rf"SynthConfig\.{name}\b"):
        SynthConfig(**kwargs)


def test_invalid_make_arguments(tmp_path):
    with pytest.raises(ConfigError, match="n_subject"):
        make_synthetic_cohort(tmp_path / "x", n_subject=4)
    with pytest.raises(ConfigError, match="n_jobs"):
        make_synthetic_cohort(tmp_path / "x", n_subjects=4, n_jobs=0)
    assert not (tmp_path / "x").exists()


def test_override_effect_takes_its_default_size():
    config = synthetic._apply_overrides(SynthConfig(effect="atrophy"), {"effect": "intensity"})
    assert config.effect_size == DEFAULT_EFFECT_SIZE["intensity"]


def test_overlapping_age_region_warns():
    with pytest.warns(BrainmapsWarning, match="left_thalamus"):
        SynthConfig(regions=("left_thalamus",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SynthConfig()


def test_bids_layout(cohort):
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "group", "age", "sex", "site"]
    assert list(table.participant_id) == [f"sub-{i:04d}" for i in range(1, 9)]
    assert (table.group.value_counts() == 4).all() and set(table.group) == {"control", "patient"}
    assert (table.sex.value_counts() == 4).all() and set(table.sex) == {"F", "M"}
    assert table.age.between(20, 80).all() and set(table.site) == {"site1"}
    gt = nib.load(cohort / "ground_truth_mask.nii.gz")
    assert gt.shape == (46, 55, 46) and gt.get_data_dtype() == np.uint8
    assert np.allclose(gt.affine[:3, :3], 4.0 * np.eye(3))
    assert np.allclose(gt.affine[:3, 3], [-90.0, -126.0, -72.0])
    for pid in table.participant_id:
        img = nib.load(cohort / pid / "anat" / f"{pid}_T1w.nii.gz")
        assert img.shape == gt.shape and np.allclose(img.affine, gt.affine)
        data = np.asarray(img.dataobj)
        assert data.dtype == np.int16 and 700 < np.percentile(data, 99.5) < 1400
    desc = json.loads((cohort / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Name"] == "brainmaps" and "BIDSVersion" in desc
    assert SynthConfig.from_dict(desc["SynthConfig"]) == SynthConfig(
        n_subjects=8, seed=1, voxel_size=4.0, **ATROPHY
    )
    readme = (cohort / "README").read_text()
    assert "(-26, -22, -14)" in readme and "ground_truth_age_mask" in readme
    assert not list(cohort.rglob(".*tmp*"))  # no temporary files left over


def test_images_are_in_mni_space(cohort):
    _, images = _stack(cohort)
    ref = nib.load(cohort / "ground_truth_mask.nii.gz")
    template = image.resample_to_img(
        datasets.load_mni152_template(), ref, interpolation="linear", copy_header=True
    )
    r = np.corrcoef(images.mean(0).ravel(), template.get_fdata().ravel())[0, 1]
    assert r > 0.9


@pytest.mark.parametrize(
    ("mask", "centres"),
    [
        ("ground_truth_mask.nii.gz", [(-26, -22, -14), (26, -22, -14)]),
        ("ground_truth_age_mask.nii.gz", [(-8, -8, 20), (8, -8, 20)]),
    ],
)
def test_ground_truth_masks(cohort, mask, centres):
    img = nib.load(cohort / mask)
    data = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.uint8 and set(np.unique(data)) == {0, 1}
    brain = image.resample_to_img(
        datasets.load_mni152_brain_mask(), img, interpolation="nearest", copy_header=True
    )
    assert brain.get_fdata()[data > 0].mean() > 0.97  # inside the brain
    xyz = nib.affines.apply_affine(img.affine, np.argwhere(data > 0))
    for centre in centres:  # one blob per hemisphere, centred near the region's centre
        side = xyz[np.sign(xyz[:, 0]) == np.sign(centre[0])]
        assert len(side) > 40
        assert np.linalg.norm(side.mean(0) - centre) < 5.0


def test_determinism_and_n_jobs(tmp_path, cohort):
    again = make_synthetic_cohort(tmp_path / "b", seed=1, n_jobs=2, **SMALL, **ATROPHY)
    other = make_synthetic_cohort(tmp_path / "c", seed=2, **SMALL, **ATROPHY)
    table, images = _stack(cohort)
    table_b, images_b = _stack(again)
    table_c, images_c = _stack(other)
    pd.testing.assert_frame_equal(table, table_b)
    np.testing.assert_array_equal(images, images_b)
    assert not table.equals(table_c)
    assert not np.array_equal(images, images_c)
    row = dict(table.iloc[0])  # a subject does not depend on the rest of the cohort
    config = SynthConfig(n_subjects=8, seed=1, voxel_size=4.0, **ATROPHY)
    np.testing.assert_array_equal(simulate_subject(config, row, 0), images[0])


def test_group_effect_in_cohort(clean_cohort):
    table, images = _stack(clean_cohort)
    gt = _load(clean_cohort / "ground_truth_mask.nii.gz") > 0
    config = SynthConfig(n_subjects=16, effect="intensity", effect_size=0.3, **CLEAN, **HIPPO)
    far = _far_from(config, load_template_space(4.0), margin=25.0)
    patient = (table.group == "patient").to_numpy()
    inside = images[:, gt].mean(1)
    diff_in = inside[patient].mean() - inside[~patient].mean()
    assert diff_in < -40  # ~7 % of white matter darker on average over the mask
    assert stats.ttest_ind(inside[patient], inside[~patient]).pvalue < 1e-3
    outside = images[:, far].mean(1)
    assert abs(outside[patient].mean() - outside[~patient].mean()) < 0.25 * abs(diff_in)


def test_age_effect_in_cohort(clean_cohort):
    table, images = _stack(clean_cohort)
    age_mask = _load(clean_cohort / "ground_truth_age_mask.nii.gz") > 0
    r, p = stats.pearsonr(images[:, age_mask].mean(1), table.age)
    assert r < -0.7 and p < 0.01  # bigger (dark) ventricles with age


def test_atrophy_in_cohort(tmp_path):
    out = make_synthetic_cohort(
        tmp_path / "atrophy", n_subjects=16, effect_size=0.5, progress=False, **CLEAN, **ATROPHY
    )
    table, images = _stack(out)
    gt = _load(out / "ground_truth_mask.nii.gz") > 0
    far = _far_from(SynthConfig(**CLEAN, **ATROPHY), load_template_space(4.0), margin=25.0)
    patient = (table.group == "patient").to_numpy()
    t = np.abs(stats.ttest_ind(images[patient], images[~patient]).statistic)
    assert np.nanmean(t[gt]) > 1.3 * np.nanmean(t[far])


@pytest.mark.parametrize("effect", ["atrophy", "intensity"])
def test_group_effect_is_local(effect):
    """Same subject as control and as patient: images differ only around the regions."""
    config = SynthConfig(n_subjects=8, voxel_size=4.0, effect=effect, **HIPPO)
    space = load_template_space(4.0)
    control = simulate_subject(config, CONTROL, 3).astype(float)
    patient = simulate_subject(config, {**CONTROL, "group": "patient"}, 3).astype(float)
    changed = control != patient
    regions = [synthetic.get_region(n) for n in config.regions]
    near = np.zeros(space.shape, dtype=bool)
    for region in regions:
        near |= region_distance(space, region) <= region.radius + 10.0
    assert not changed[~near].any()
    gt = _load_mask(config)
    assert changed[gt].mean() > 0.3
    if effect == "intensity":
        assert (patient[gt] <= control[gt] + 1).all()


def _load_mask(config):
    space = load_template_space(config.voxel_size)
    masks = [synthetic.region_mask(space, synthetic.get_region(n)) for n in config.regions]
    return np.logical_or.reduce(masks)


def test_intensity_effect_is_proportional_to_effect_size():
    """Without noise the decrease is exactly linear in effect_size and bounded by it."""
    images = {}
    for size in (0.0, 0.2, 0.4):
        config = SynthConfig(
            n_subjects=8, voxel_size=4.0, effect="intensity", effect_size=size, **HIPPO
        )
        config = synthetic._apply_overrides(config, {"noise": 0.0})
        images[size] = simulate_subject(config, {**CONTROL, "group": "patient"}, 5).astype(float)
    drop1, drop2 = images[0.0] - images[0.2], images[0.0] - images[0.4]
    np.testing.assert_allclose(drop2, 2 * drop1, atol=1.5)
    ratio = images[0.2][images[0.0] > 300] / images[0.0][images[0.0] > 300]
    assert 1 - 1.6 * 0.2 < ratio.min() < 1 - 0.4 * 0.2  # 20 % +- per-patient variation
    assert ratio.max() <= 1.0 + 1e-9


def test_atrophy_matches_literal_warp(monkeypatch):
    """No nuisance: the patient image is the template sampled through the documented map."""
    for name in ("_SIZE_SD", "_EFFECT_SD", "_AGE_SD"):
        monkeypatch.setattr(synthetic, name, 0.0)
    config = SynthConfig(
        n_subjects=8, voxel_size=4.0, effect_size=0.3, noise=0.0, deformation_mm=0.0,
        bias_field=0.0, sex_effect=0.0, **ATROPHY,
    )  # fmt: skip
    patient = simulate_subject(config, {**CONTROL, "group": "patient"}, 0).astype(float)
    space = load_template_space(4.0)
    ijk = np.indices(space.shape).reshape(3, -1).astype(float)
    xyz = space.affine[:3, :3] @ ijk + space.affine[:3, 3:]
    a = 0.3 / (1 - 0.3)  # radii at the centre scaled by 1 - effect_size
    for name in config.regions:
        region = synthetic.get_region(name)
        c = np.array(region.centre)[:, None]
        r = np.linalg.norm(xyz - c, axis=0)
        w = np.where(r < region.radius, (1 - (r / region.radius) ** 2) ** 2, 0.0)
        xyz = c + (xyz - c) * (1 + a * w)
    src = (xyz - space.affine[:3, 3:]) / 4.0
    expected = ndimage.map_coordinates(space.t1.astype(float), src, order=1) * 1000
    expected = expected.reshape(space.shape)
    support = np.zeros(space.shape, dtype=bool).ravel()
    support[space.support] = True
    support = support.reshape(space.shape)
    assert np.abs(patient - np.rint(expected))[support].max() <= 1.0
    assert (patient != np.rint(space.t1 * 1000))[support].sum() > 100


def test_radial_warp_known_values():
    points = np.array([[0.0, 5.0, 10.0, 20.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    warped = points.astype(np.float32).copy()
    radial_warp(warped, (0.0, 0.0, 0.0), 10.0, 0.5)
    np.testing.assert_allclose(warped[0], [0.0, 5.0 * (1 + 0.5 * 0.75**2), 10.0, 20.0])
    np.testing.assert_array_equal(warped[1:], 0.0)


def test_age_effect_is_monotonic_and_local():
    config = SynthConfig(n_subjects=8, voxel_size=4.0, **ATROPHY)
    space = load_template_space(4.0)
    age_mask = np.logical_or.reduce(
        [synthetic.region_mask(space, synthetic.get_region(n)) for n in config.age_regions]
    )
    images = [simulate_subject(config, {**CONTROL, "age": a}, 2) for a in (20, 40, 60, 80)]
    means = [im[age_mask].mean() for im in images]
    assert all(np.diff(means) < 0) and means[0] - means[-1] > 15
    far = _far_from(config, space, margin=10.0)
    np.testing.assert_array_equal(images[0][far], images[-1][far])


def test_sites_change_intensity(tmp_path):
    config = SynthConfig(n_subjects=8, voxel_size=4.0, n_sites=2, **ATROPHY)
    table = synthetic.draw_participants(config)
    assert (table.site.value_counts() == 4).all()
    one = simulate_subject(config, {**CONTROL, "site": "site1"}, 0).astype(float)
    two = simulate_subject(config, {**CONTROL, "site": "site2"}, 0).astype(float)
    assert abs(np.median(one[one > 200]) / np.median(two[two > 200]) - 1) > 0.02


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        make_synthetic_cohort(tmp_path, **SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="out_dir"):
        make_synthetic_cohort(tmp_path / "file", **SMALL)


def test_rerun_resumes_or_replaces(tmp_path):
    out = make_synthetic_cohort(tmp_path / "c", **SMALL)
    first = out / "sub-0001" / "anat" / "sub-0001_T1w.nii.gz"
    stamp = first.stat().st_mtime_ns
    make_synthetic_cohort(out, **SMALL)  # same settings: finished images are kept
    assert first.stat().st_mtime_ns == stamp
    make_synthetic_cohort(out, **{**SMALL, "n_subjects": 4})  # other settings: replaced
    assert sorted(p.name for p in out.glob("sub-*")) == [f"sub-{i:04d}" for i in range(1, 5)]
    assert len(pd.read_csv(out / "participants.tsv", sep="\t")) == 4
