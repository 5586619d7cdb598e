"""Explaining a whole run: out-of-fold models, NIfTI output, class means, resume, and
localisation of the planted effect."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nilearn.datasets import load_mni152_template
from sklearn.metrics import roc_auc_score

from brainmaps.attribution.cohort import explain_run
from brainmaps.cli.main import main
from brainmaps.data.io import load_img
from brainmaps.data.preprocess import mni_brain_mask, mni_grid, resample_to_grid
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import open_run

METHODS = ["grad_cam", "guided_backprop", "gradient"]
#: Meaningful Perturbations at sizes for a 5 mm grid with regions a few voxels wide (the
#: settings that were 6, 1, 2 and 1 voxels of 36x44x36): a mask smoothing of 10 voxels
#: here (50 mm; the paper's 10 voxels of 3.1 mm are 31 mm) smooths the mask far beyond
#: the regions, and its class-mean map then scores 0.50 (chance) on this cohort; with these
#: settings it scores 0.78-0.92. A 10.2 mm mask cell gives the 18x22x18 mask of those
#: settings. 30 iterations of 4 draws keep the test short.
MP_5MM = {
    "sigma_blur_mm": 30.0,
    "sigma_mask_mm": 5.0,
    "mask_voxel_mm": 10.2,
    "jitter_mm": 5.0,
    "l1_coeff": 1.0,
    "max_iter": 30,
    "n_draws": 4,
}
#: Methods whose class-mean maps must localise the planted effect. Not Grad-CAM: on this
#: tiny model its last block is 2x3x2 voxels and its patient-mean map scores 0.33-0.72
#: over training seeds 0-4 and 7 (chance 0.5; blocks 1 and 2, and the map without its
#: ReLU, did no better: 0.33-0.66 on the seeds tried), so it is checked on a hand-built
#: model instead (``test_grad_cam_localises_the_evidence_of_a_hand_built_model``).
LOCALISING = ["gradient", "meaningful_perturbation"]


@pytest.fixture(scope="module")
def explained(tiny_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("explain") / "run"
    shutil.copytree(tiny_run, run_dir)
    tables = explain_run(run_dir, METHODS, batch_size=8, progress=False)
    return run_dir, tables


def test_every_subject_gets_a_map_from_its_out_of_fold_model(explained):
    run_dir, tables = explained
    cohort = pd.read_csv(run_dir / "cohort.tsv", sep="\t", dtype={"subject": str})
    expected = dict(zip(cohort["subject"], cohort["test_fold"], strict=True))
    for method in METHODS:
        table = tables[method]
        assert len(table) == len(cohort)
        assert dict(zip(table["subject"], table["fold"], strict=True)) == expected
        on_disk = pd.read_csv(run_dir / "maps" / method / "maps.tsv", sep="\t", dtype=str)
        assert len(on_disk) == len(cohort)


def test_maps_are_nifti_on_the_model_grid_with_class_means(explained):
    run_dir, _ = explained
    run = open_run(run_dir)
    for method in METHODS:
        folder = run_dir / "maps" / method
        img = nib.load(folder / "sub-0001.nii.gz")
        assert img.shape == run.grid.shape
        np.testing.assert_allclose(img.affine, run.grid.affine)
        means = {c: np.asarray(nib.load(folder / f"mean_{c}.nii.gz").dataobj) for c in run.classes}
        conjoined = np.asarray(nib.load(folder / "mean_conjoined.nii.gz").dataobj)
        np.testing.assert_allclose(conjoined, sum(means.values()), rtol=1e-5, atol=1e-7)
        patients = run.table.loc[run.table["label"] == "patient", "subject"]
        by_hand = np.mean(
            [np.asarray(nib.load(folder / f"sub-{s}.nii.gz").dataobj) for s in patients], axis=0
        )
        np.testing.assert_allclose(means["patient"], by_hand, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def localisation_run(tiny_cohort, tmp_path_factory):
    """xin2019 (8/16/32 channels) trained at 36x44x36 with the brain mask, then explained.

    The 8 mm grid of ``tiny_run`` is too coarse for localisation (a hippocampus is
    two voxels there); at 5 mm the planted regions span enough voxels to score.
    """
    from brainmaps.data.preprocess import PreprocessConfig
    from brainmaps.training.run import train_run
    from tiny import tiny_config

    base = tmp_path_factory.mktemp("localisation")
    config = tiny_config(tiny_cohort, base / "run", base / "cache")
    config = config.replace(preprocess=PreprocessConfig(grid_shape=(36, 44, 36), brain_mask=True))
    train_run(config, progress=False)
    explain_run(
        base / "run", LOCALISING, options={"meaningful_perturbation": MP_5MM}, progress=False
    )
    return base / "run"


def _auc(run_dir, map_img, tiny_cohort) -> float:
    run = open_run(run_dir)
    truth = resample_to_grid(load_img(tiny_cohort / "ground_truth_mask.nii.gz"), run.grid, 0)
    brain = mni_brain_mask(run.grid)
    data = np.asarray(nib.load(map_img).dataobj) if not isinstance(map_img, np.ndarray) else map_img
    return roc_auc_score(truth[brain] > 0.5, np.abs(data[brain]))


def _t_map(run_dir) -> np.ndarray:
    from scipy import stats

    run = open_run(run_dir)
    volumes = run.volumes()
    x = np.stack([volumes[i] for i in range(len(volumes))])
    t = stats.ttest_ind(x[run.labels == 1], x[run.labels == 0], axis=0).statistic
    return np.nan_to_num(t)


@pytest.mark.parametrize("method", LOCALISING)
def test_class_mean_maps_find_the_planted_effect(localisation_run, tiny_cohort, method):
    """Inside the brain, voxels of the planted regions must score higher than the rest.

    Chance is 0.5. The reference is the univariate oracle, the voxel-wise group t-map
    computed from the labels themselves: it scores about 0.83 here (the mask covers
    only 2 % of the brain and its edges are blurred by each subject's deformation).
    The bound 0.65 asks a map to get at least half-way from chance to that oracle.
    Measured over training seeds 0-4 and 7 on this split (seeds 3 and 7 also with 2
    threads): gradient 0.69-0.78, Meaningful Perturbations 0.78-0.92 (with ``MP_5MM``);
    seed 7, this fixture: 0.77 and 0.91-0.92, whatever the thread count. A map of
    intensities or a random smooth map scores about 0.5.
    """
    oracle = _auc(localisation_run, _t_map(localisation_run), tiny_cohort)
    assert oracle > 0.75  # 0.825 for every seed and thread count: it uses no model
    auc = _auc(
        localisation_run, localisation_run / "maps" / method / "mean_patient.nii.gz", tiny_cohort
    )
    assert auc >= 0.65, f"{method}: ROC AUC {auc:.3f} (t-map oracle {oracle:.3f})"


def _hand_built_bright_detector(shape) -> torch.nn.Module:
    """xin2019 with one channel per block whose only evidence is voxels brighter than 3.

    Block 1 computes ``relu(x - 3)`` (a centre tap and a bias), blocks 2 and 3 pass it
    on (centre taps, max-pooling), batch norm is the identity, and the class-1 logit is
    the sum of the last block's features, the class-0 logit minus that sum.
    """
    from brainmaps.models import create_model

    model = create_model(
        "xin2019", in_channels=1, n_classes=2, input_shape=list(shape), channels=[1, 1, 1]
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for k, bias in enumerate([-3.0, 0.0, 0.0], start=1):
            block = getattr(model.features, f"block{k}")
            block.conv.weight[0, 0, 1, 1, 1] = 1.0
            block.conv.bias.fill_(bias)
            block.bn.weight.fill_(1.0)
        model.classifier.fc.weight[1] = 1.0
        model.classifier.fc.weight[0] = -1.0
    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_grad_cam_localises_the_evidence_of_a_hand_built_model(tiny_cohort, seed):
    """Grad-CAM at the default (last) layer, upsampled from its 2x3x2 features onto the
    36x44x36 MNI grid, must find the planted regions when they are the model's only
    evidence: the volumes are the z-scored MNI template (maximum 2.4) plus noise, with
    +4 inside the cohort's ground-truth mask, and the model of
    :func:`_hand_built_bright_detector` sees only voxels above 3. Measured: ROC AUC
    0.953-0.956 over noise seeds 0-2 (no training, so no machine dependence). The
    class-0 logit falls with the same features, so its map is zero (ReLU keeps only
    positive evidence): unlike guided backprop, Grad-CAM is class-sensitive.
    """
    from brainmaps.attribution import create_method

    shape = (36, 44, 36)
    grid = mni_grid(shape)
    truth = resample_to_grid(load_img(tiny_cohort / "ground_truth_mask.nii.gz"), grid, 0) > 0.5
    brain = mni_brain_mask(grid)
    template = resample_to_grid(load_mni152_template(resolution=2), grid)
    volume = torch.from_numpy(((template - template.mean()) / template.std()).astype(np.float32))
    noise = torch.randn(4, 1, *shape, generator=torch.Generator().manual_seed(seed))
    x = volume + 0.3 * noise + 4.0 * torch.from_numpy(truth.astype(np.float32))
    grad_cam = create_method("grad_cam", _hand_built_bright_detector(shape))
    mean_map = grad_cam.attribute(x, target=1).numpy().mean(axis=0)
    assert roc_auc_score(truth[brain], mean_map[brain]) >= 0.9
    assert not grad_cam.attribute(x, target=0).numpy().any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guided_backprop_is_class_insensitive(seed):
    """Guided backprop's maps barely depend on the class explained (Nie et al. 2018;
    Adebayo et al. 2018): it mostly reconstructs image edges, which is why it does not
    localise the planted effect (class-mean AUC 0.42-0.60 in our measurements) and is
    kept for comparison with Kan et al. only.

    A hand-built model makes the answer known: its second logit is minus the first, so
    the plain gradients of the two classes are exactly opposite (correlation -1), while
    guided backprop's maps stay alike (0.70-0.79 over seeds 0-5, 1 and 2 threads)."""
    from brainmaps.attribution import create_method
    from brainmaps.models import create_model

    shape = (36, 44, 36)
    template = resample_to_grid(load_mni152_template(resolution=2), mni_grid(shape))
    volume = torch.from_numpy(((template - template.mean()) / template.std()).astype(np.float32))
    torch.manual_seed(seed)
    model = create_model(
        "xin2019", in_channels=1, n_classes=2, input_shape=list(shape), channels=[8, 16, 32]
    )
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight[1] = -last.weight[0]
        last.bias[1] = -last.bias[0]
    noise = torch.randn(4, 1, *shape, generator=torch.Generator().manual_seed(seed))
    x = volume[None, None] + 0.3 * noise
    gbp = create_method("guided_backprop", model)
    a, b = gbp.attribute(x, target=0).numpy(), gbp.attribute(x, target=1).numpy()
    grad = create_method("gradient", model, absolute=False)
    g0, g1 = grad.attribute(x, target=0).numpy(), grad.attribute(x, target=1).numpy()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.6
    assert np.corrcoef(g0.ravel(), g1.ravel())[0, 1] < -0.999


def test_resume_recomputes_only_missing_maps(explained):
    run_dir, _ = explained
    folder = run_dir / "maps" / "grad_cam"
    victim = folder / "sub-0002.nii.gz"
    kept = folder / "sub-0001.nii.gz"
    before = kept.stat().st_mtime_ns
    data = np.asarray(nib.load(victim).dataobj).copy()
    victim.unlink()
    table = explain_run(run_dir, ["grad_cam"], progress=False)["grad_cam"]
    assert victim.is_file() and len(table) == 40
    assert kept.stat().st_mtime_ns == before
    np.testing.assert_allclose(np.asarray(nib.load(victim).dataobj), data, rtol=1e-5, atol=1e-7)


def test_cli_explain_with_options_and_native_space(explained, capsys):
    run_dir, _ = explained
    code = main(
        [
            "explain",
            str(run_dir),
            "--methods",
            "gradient,occlusion",
            "--set",
            "occlusion.window_mm=24",
            "--set",
            "occlusion.stride_mm=24",
            "--target",
            "true",
            "--native-space",
            "--occlusion-cohort",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "gradient: 40 maps" in printed and "cohort occlusion map" in printed
    drop = nib.load(run_dir / "maps" / "occlusion" / "cohort_accuracy_drop.nii.gz")
    assert drop.shape == open_run(run_dir).grid.shape
    assert np.isfinite(drop.get_fdata()).all() and np.abs(drop.get_fdata()).max() <= 1
    run = open_run(run_dir)
    folds = [nib.load(run.layout.occlusion_cohort_map(k)).get_fdata() for k in range(run.n_folds)]
    weights = [len(run.indices(k, "test")) for k in range(run.n_folds)]
    mean = np.average(np.stack(folds), axis=0, weights=weights)  # the mean of the fold maps
    np.testing.assert_allclose(drop.get_fdata(), mean, atol=1e-6)
    source = nib.load(run.table["path"].iloc[0])
    native = nib.load(run_dir / "maps" / "gradient" / "native" / "sub-0001.nii.gz")
    assert native.shape == source.shape
    np.testing.assert_allclose(native.affine, source.affine)


def test_bad_requests_are_clear(explained, capsys):
    run_dir, _ = explained
    with pytest.raises(ConfigError, match="grad_cam"):
        explain_run(run_dir, ["gradcam"], progress=False)
    with pytest.raises(ConfigError, match="control, patient"):
        explain_run(run_dir, ["gradient"], target="healthy", progress=False)
    with pytest.raises(ConfigError, match="unknown option"):
        explain_run(run_dir, ["gradient"], options={"gradient": {"sigma": 2}}, progress=False)
    # a former option in voxels, converted at the run's grid (22x26x22, about 8.3 mm)
    args = [
        "--methods",
        "meaningful_perturbation",
        "--set",
        "meaningful_perturbation.sigma_mask=10",
    ]
    assert main(["explain", str(run_dir), *args]) == 2
    assert not (run_dir / "maps" / "meaningful_perturbation").exists()
    assert (
        "option sigma_mask is now sigma_mask_mm (mm): 10 voxels at this 22x26x22 grid = 82.7 x "
        "83.8 x 82.7 mm; give one value in mm, e.g. sigma_mask_mm=83.9."
    ) in capsys.readouterr().err
    assert main(["explain", str(run_dir), "--set", "oops"]) == 2
    assert "METHOD.OPTION=VALUE" in capsys.readouterr().err


def test_subjects_per_fold_explains_a_balanced_sample(tiny_run, tmp_path):
    from brainmaps.run.folder import open_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    table = explain_run(run_dir, ["gradient"], subjects_per_fold=4, progress=False)["gradient"]
    run = open_run(run_dir)
    assert len(table) == 4 * run.n_folds
    assert table.groupby("fold").size().eq(4).all()
    # the classes are taken in turn: two of each per fold
    assert table.groupby(["fold", "label"]).size().eq(2).all()
    again = explain_run(run_dir, ["gradient"], subjects_per_fold=4, progress=False)["gradient"]
    assert list(again["subject"]) == list(table["subject"])
    with pytest.raises(ConfigError, match="subjects_per_fold"):
        explain_run(run_dir, ["gradient"], subjects_per_fold=0, progress=False)
