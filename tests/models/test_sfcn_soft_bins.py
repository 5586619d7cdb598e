"""SFCN's soft-label training of brain age (Peng et al. 2021, ``soft_bins``).

Soft labels against a Gaussian oracle, the expectation and the KL loss of a hand-built
model, bad options, attribution, a tiny training against the mean predictor, and a run
whose per-fold bins go through the checkpoints to ``predict`` and a resumed run.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import norm

from brainmaps.attribution import create_method
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.models import SFCN, create_model
from brainmaps.models.checkpoints import load_checkpoint, model_from_checkpoint
from brainmaps.models.predict import predict_volumes
from brainmaps.models.soft_bins import kl_loss, soft_bin_range, soft_labels
from brainmaps.training.loop import train_model
from tiny import TINY_GRID

SHAPE = (8, 8, 8)  # three blocks need 4 voxels per axis
TINY = {"n_classes": 1, "input_shape": list(SHAPE), "channels": [2, 3, 4]}


def _soft(targets=(44.3, 50.0, 79.8), **options):
    torch.manual_seed(0)
    return create_model("sfcn", **SFCN.fit_config({**TINY, "soft_bins": 1, **options}, targets))


def _x(n=3, seed=1):
    return torch.randn((n, 1, *SHAPE), generator=torch.Generator().manual_seed(seed))


def _oracle_labels(y, edges, sigma):
    """Peng et al.'s num2vect: the normal CDF difference over each bin, renormalised."""
    y = np.clip(y, edges[0], edges[-1])
    mass = norm.cdf(edges[1:], loc=y, scale=sigma) - norm.cdf(edges[:-1], loc=y, scale=sigma)
    return mass / mass.sum()


# -- bins, soft labels, expectation, loss -------------------------------------------


def test_bins_come_from_the_training_range_padded_by_two_bins():
    assert soft_bin_range([44.3, 79.8], 1.0) == (42.0, 82.0)  # Peng et al.'s 40 bins
    assert soft_bin_range([20.0, 30.0], 2.5) == (15.0, 35.0)
    config = SFCN.fit_config({**TINY, "soft_bins": 1}, np.array([44.3, 50.0, 79.8]))
    assert config["bin_range"] == [42.0, 82.0]
    np.testing.assert_allclose(config["target_stats"], [58.0333333, 15.5662741], rtol=1e-7)
    model = create_model("sfcn", **config)
    assert model.classifier.fc.out_features == 40
    assert SFCN.fit_config(config, np.array([44.3, 50.0, 79.8])) == config  # idempotent
    assert SFCN.fit_config(TINY, [1.0, 2.0]) == TINY  # no soft_bins: unchanged


@pytest.mark.parametrize(("y", "sigma"), [(61.3, 1.0), (42.2, 1.0), (50.0, 0.3), (90.0, 2.0)])
def test_soft_labels_sum_to_one_and_match_the_gaussian_oracle(y, sigma):
    edges = np.arange(42.0, 83.0)
    labels = soft_labels(torch.tensor([y], dtype=torch.float64), torch.tensor(edges), sigma)[0]
    labels = labels.numpy()
    assert labels.shape == (40,)
    assert labels.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(labels, _oracle_labels(y, edges, sigma), atol=1e-7)


def test_soft_labels_of_the_model_are_those_of_the_targets_in_years():
    model = _soft()
    mean, std = model.target_stats
    ages = np.array([47.0, 63.5])
    head = model.classifier.soft_bins
    labels = soft_labels(torch.tensor((ages - mean) / std), head.edges, head.sigma).numpy()
    for got, age in zip(labels, ages, strict=True):
        np.testing.assert_allclose(got, _oracle_labels(age, np.arange(42.0, 83.0), 1.0), atol=1e-6)


def _hand_built():
    """Four bins [0, 4) of width 1, standardised with (mean 1.5, std 2); the logits are
    log(1, 2, 3, 4) for every input (zero weights), so softmax = (0.1, 0.2, 0.3, 0.4)."""
    config = {**TINY, "soft_bins": 1, "soft_sigma": 0.5}
    model = create_model("sfcn", **config, bin_range=[0, 4], target_stats=[1.5, 2.0]).eval()
    with torch.no_grad():
        model.classifier.fc.weight.zero_()
        model.classifier.fc.bias.copy_(torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0])))
    return model


def test_the_output_is_the_expected_bin_centre_in_standardised_units():
    model = _hand_built()
    # centres 0.5, 1.5, 2.5, 3.5 years: 0.05 + 0.3 + 0.75 + 1.4 = 2.5 years; (2.5 - 1.5) / 2
    out = model(_x())
    assert out.shape == (3, 1)
    torch.testing.assert_close(out, torch.full((3, 1), 0.5))


def test_the_loss_is_the_kl_divergence_computed_by_hand():
    model = _hand_built()
    ages = np.array([1.2, 3.0, 0.1])
    loss, out = model.training_loss(_x(), torch.tensor((ages - 1.5) / 2.0, dtype=torch.float32))
    p = np.array([0.1, 0.2, 0.3, 0.4])
    kl = [(q * np.log(q / p)).sum() for q in (_oracle_labels(a, np.arange(5.0), 0.5) for a in ages)]
    assert float(loss.detach()) == pytest.approx(np.mean(kl), rel=1e-5)
    torch.testing.assert_close(out, torch.full((3, 1), 0.5))
    torch.testing.assert_close(
        kl_loss(torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]])), torch.tensor(math.log(4))
    )


def test_a_plain_sfcn_leaves_the_loss_to_the_task():
    model = create_model("sfcn", **TINY)
    assert model.training_loss(_x(), torch.zeros(3)) is None
    assert model.target_stats is None


# -- bad options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"soft_bins": 0}, r"soft_bins must be a positive number .*got 0"),
        ({"soft_bins": -1.0}, r"soft_bins must be a positive number .*got -1.0"),
        ({"soft_bins": "one"}, r"soft_bins must be a positive number .*got 'one'"),
        ({"soft_bins": True}, r"soft_bins must be a positive number .*got True"),
        ({"soft_bins": float("nan")}, r"soft_bins must be a positive number"),
        ({"soft_bins": 1, "soft_sigma": 0}, r"soft_sigma must be a positive number .*got 0"),
        ({"soft_bins": 1, "n_classes": 2}, r"soft_bins=1 is Peng .* n_classes=2 .*classif"),
        ({"soft_bins": 50}, r"soft_bins=50 is too wide .*\[44.3, 79.8\].*soft_bins <= 17.75"),
    ],
)
def test_bad_soft_bin_options_name_the_parameter_and_the_fix(options, message):
    with pytest.raises(ConfigError, match=message):
        SFCN.fit_config({**TINY, **options}, [44.3, 50.0, 79.8])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"needs bin_range \(start, stop\).*got None; derive it .*SFCN.fit_config"),
        ({"bin_range": [42, 82]}, r"needs target_stats \(mean, std\) with std > 0.*got None"),
        ({"bin_range": [42, 42.5], "target_stats": [60, 10]}, r"at least 2\) of soft_bins=1"),
        ({"bin_range": [42, 81.5], "target_stats": [60, 10]}, r"whole number .*found 39.5"),
        ({"bin_range": [42, 82], "target_stats": [60, 0]}, r"std > 0.*got \[60, 0\]"),
        ({"bins": 40, "bin_range": [42, 82], "target_stats": [60, 10]}, r"bins=40 and soft_bins"),
    ],
)
def test_a_soft_model_needs_its_fitted_bins(options, message):
    with pytest.raises(ConfigError, match=message):
        create_model("sfcn", **TINY, soft_bins=1, **options)


def test_fitted_entries_cannot_be_set_by_hand():
    with pytest.raises(ConfigError, match=r"bin_range=\[0, 100\] is derived from the training"):
        SFCN.fit_config({**TINY, "soft_bins": 1, "bin_range": [0, 100]}, [44.3, 79.8])
    with pytest.raises(ConfigError, match="bin_range and target_stats belong to soft_bins"):
        create_model("sfcn", **TINY, bin_range=[42, 82])


def test_training_refuses_targets_the_bins_were_not_fitted_to():
    rng = np.random.default_rng(0)
    volumes, ages = list(rng.normal(size=(6, *SHAPE)).astype(np.float32)), rng.uniform(40, 80, 6)
    model = _soft(targets=ages)  # fitted to all six, trained on four
    with pytest.raises(ConfigError, match=r"built for training targets with \(mean, std\)"):
        train_model(model, volumes, ages, range(4), [4, 5], task="regression", progress=False)
    with pytest.raises(ConfigError, match="None: classification"):
        train_model(model, volumes, np.arange(6) % 2, range(6), [], progress=False)


# -- attribution --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradient", "grad_cam"])
def test_gradient_methods_explain_the_expected_value(method):
    model = _soft().eval()
    maps = create_method(method, model).attribute(_x(2), target=0)
    assert maps.shape == (2, *SHAPE) and torch.isfinite(maps).all() and maps.abs().sum() > 0


@pytest.mark.parametrize("method", ["lrp", "cam"])
def test_lrp_and_cam_refuse_the_softmax_expectation(method):
    with pytest.raises(ConfigError, match="soft_bins"):
        create_method(method, _soft().eval()).attribute(_x(2), target=0)


# -- training -------------------------------------------------------------------------


def _age_problem(seed, n=80):
    """Noise volumes whose central 4^3 cube is brightened by (age - 60) / 10."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(40, 80, size=n)
    volumes = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    volumes[:, 2:6, 2:6, 2:6] += ((ages - 60) / 10).astype(np.float32)[:, None, None, None]
    return list(volumes), ages


def test_tiny_soft_bin_training_beats_the_mean_predictor():
    """Measured (20 epochs, lr 1e-2, 48 train / 12 val / 20 test, 8^3 volumes, channels
    4-8-8, one thread): test MAE / MAE of predicting the training mean, over seeds 0-9,
    0.30, 0.24, 0.28, 0.14, 0.31, 0.27, 0.30, 0.24, 0.31, 0.41 (MAE 1.7-3.2 years against
    7.0-11.9); asserted < 0.7 for seed 0."""
    volumes, ages = _age_problem(0)
    train, val, test = np.arange(48), np.arange(48, 60), np.arange(60, 80)
    options = {**TINY, "channels": [4, 8, 8], "dropout": 0.0, "soft_bins": 1}
    torch.manual_seed(0)
    model = create_model("sfcn", **SFCN.fit_config(options, ages[train]))
    result = train_model(
        model, volumes, ages, train, val, task="regression", epochs=20, lr=1e-2,
        batch_size=8, seed=0, device="cpu", progress=False,
    )  # fmt: skip
    history = result.history
    assert np.isfinite(history[["train_loss", "val_loss", "val_mae"]].to_numpy()).all()
    assert result.best_epoch == int(history.loc[history["val_loss"].idxmin(), "epoch"])
    assert (history["train_loss"] >= 0).all()  # a KL divergence, not an MSE
    pred = predict_volumes(
        model, volumes, test, task="regression", target_stats=result.target_stats, device="cpu"
    )
    start, stop = model.config["bin_range"]
    assert ((pred > start) & (pred < stop)).all()
    ratio = np.abs(pred - ages[test]).mean() / np.abs(ages[train].mean() - ages[test]).mean()
    assert ratio < 0.7


# -- a run: per-fold bins in the checkpoints, predict, resume ---------------------------


@pytest.fixture(scope="module")
def soft_run(tiny_cohort, tmp_path_factory):
    from brainmaps.cli.main import main

    base = tmp_path_factory.mktemp("soft_bins")
    args = ["train", str(tiny_cohort), "--target", "age", "--model", "sfcn"]
    args += ["--model-option", "soft_bins=1", "--model-option", "channels=[4,8,8]"]
    args += ["--out", str(base / "run"), "--cache-dir", str(base / "cache")]
    args += ["--grid", "x".join(map(str, TINY_GRID)), "--folds", "2", "--epochs", "2"]
    args += ["--batch-size", "4", "--seed", "1", "--no-progress"]
    with warnings.catch_warnings():  # two epochs learn little of age: the bias line warns
        warnings.simplefilter("ignore", BrainmapsWarning)
        assert main(args) == 0
    return base / "run", args


def test_each_fold_records_bins_of_its_training_subjects(soft_run):
    run_dir, _ = soft_run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"] == {"name": "sfcn", "options": {"soft_bins": 1, "channels": [4, 8, 8]}}
    cohort = pd.read_csv(run_dir / "cohort.tsv", sep="\t", dtype={"subject": str})
    folds = pd.read_csv(run_dir / "folds.tsv", sep="\t", dtype={"subject": str})
    for k in (0, 1):
        meta = load_checkpoint(run_dir / f"fold-{k}" / "model.pt")[1]
        roles = folds.loc[folds["fold"] == k, "role"].to_numpy()
        ages = cohort["y"].to_numpy(dtype=float)[roles == "train"]
        net = meta["model_config"]
        assert net["soft_bins"] == 1 and net["bin_range"] == list(soft_bin_range(ages, 1.0))
        np.testing.assert_allclose(net["target_stats"], meta["target_stats"])
        np.testing.assert_allclose(net["target_stats"], [ages.mean(), ages.std()])
        model, _ = model_from_checkpoint(run_dir / f"fold-{k}" / "model.pt")
        assert model.classifier.soft_bins.n_bins == round(net["bin_range"][1] - net["bin_range"][0])


def test_predict_and_resume_rebuild_the_same_models(soft_run, tiny_cohort, tmp_path, capsys):
    from brainmaps.cli.main import main

    run_dir, args = soft_run
    images = sorted(tiny_cohort.glob("sub-*/anat/*_T1w.nii.gz"))[:3]
    out = tmp_path / "preds.tsv"
    assert main(["predict", str(run_dir), *map(str, images), "--out", str(out)]) == 0
    table = pd.read_csv(out, sep="\t")
    ranges = [load_checkpoint(p)[1]["model_config"]["bin_range"] for p in
              sorted(run_dir.glob("fold-*/model.pt"))]  # fmt: skip
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    assert len(table) == 3 and table["prediction"].between(low, high).all()
    capsys.readouterr()
    assert main(args) == 0
    assert "resumed: folds [0, 1]" in capsys.readouterr().out


def test_a_classification_target_is_refused_before_anything_is_written(
    tiny_cohort, tmp_path, capsys
):
    from brainmaps.cli.main import main

    args = ["train", str(tiny_cohort), "--target", "group", "--model", "sfcn"]
    args += ["--model-option", "soft_bins=1", "--out", str(tmp_path / "run")]
    args += ["--grid", "x".join(map(str, TINY_GRID)), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "soft_bins=1" in err and "classification" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_explain_runs_gradient_methods_and_refuses_lrp(soft_run, capsys):
    from brainmaps.cli.main import main

    run_dir, _ = soft_run
    common = [str(run_dir), "--subjects-per-fold", "1", "--no-progress"]
    assert main(["explain", *common, "--methods", "gradient,grad_cam"]) == 0
    for method in ("gradient", "grad_cam"):
        assert len(list((run_dir / "maps" / method).glob("sub-*.nii.gz"))) == 2
    capsys.readouterr()
    assert main(["explain", *common, "--methods", "lrp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "soft_bins" in err[0]
