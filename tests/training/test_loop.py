"""Tests of the training loop and prediction on tiny planted-signal volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainmaps.exceptions import ConfigError, DataLeakageError, ShapeError
from brainmaps.models import create_model
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import VolumeDataset, predict_volumes
from brainmaps.training import loop
from brainmaps.training.loop import train_model

SIZE = 24


def cube_volumes(n=40, effect=1.5, seed=0):
    """Noise volumes; odd-numbered ones carry a bright 8^3 cube (class 1)."""
    rng = np.random.default_rng(seed)
    volumes = rng.normal(0.0, 1.0, (n, SIZE, SIZE, SIZE)).astype(np.float32)
    labels = np.arange(n) % 2
    volumes[labels == 1, 8:16, 8:16, 8:16] += effect
    return list(volumes), labels


def tiny_model(n_classes=2, seed=0):
    torch.manual_seed(seed)
    return create_model("xin2019", n_classes=n_classes, input_shape=(SIZE,) * 3, channels=(4, 8, 8))


def run(model, volumes, targets, train_idx, val_idx, **kwargs):
    options = dict(epochs=4, batch_size=4, lr=1e-3, device="cpu", progress=False, seed=1)
    return train_model(model, volumes, targets, train_idx, val_idx, **{**options, **kwargs})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_volume_dataset_reads_lazily_from_a_memmap(tmp_path):
    data = np.arange(3 * 4 * 5 * 6, dtype=np.float32).reshape(3, 4, 5, 6)
    store = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float32,
                                      shape=data.shape)  # fmt: skip
    store[:] = data
    store.flush()
    volumes = np.load(tmp_path / "v.npy", mmap_mode="r")
    ds = VolumeDataset(volumes, [2, 0], targets=np.array([5, 6, 7]))
    assert len(ds) == 2
    x, y = ds[0]
    assert x.shape == (1, 4, 5, 6) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(data[2])) and y.item() == 7
    assert y.dtype == torch.int64
    assert VolumeDataset(data[:, None], [1])[0].shape == (1, 4, 5, 6)  # (C, X, Y, Z) kept
    with pytest.raises(ShapeError, match=r"outside 0\.\.2"):
        VolumeDataset(volumes, [3])
    with pytest.raises(ShapeError, match="one target per volume"):
        VolumeDataset(volumes, [0], targets=[1, 2])
    with pytest.raises(ShapeError, match="volume 0 has shape"):
        VolumeDataset([np.zeros((4, 5))], [0])[0]


def test_learns_a_planted_cube():
    volumes, labels = cube_volumes()
    model = tiny_model()
    result = run(model, volumes, labels, np.arange(24), np.arange(24, 30), epochs=10)
    assert list(result.history.columns) == [
        "epoch", "train_loss", "val_loss", "val_accuracy", "seconds"
    ]  # fmt: skip
    assert result.history["epoch"].tolist() == list(range(1, 11))
    proba = predict_volumes(model, volumes, np.arange(30, 40), device="cpu")
    assert proba.shape == (10, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # measured 1.0 over model and batch-order seeds 0-9 (1 thread) and 0-4 (2 threads),
    # with and without BatchNorm recalibration
    assert (proba.argmax(axis=1) == labels[30:40]).mean() >= 0.9


def test_same_seed_same_weights_and_history():
    volumes, labels = cube_volumes(n=16)
    results = [run(tiny_model(), volumes, labels, np.arange(12), np.arange(12, 16))
               for _ in range(2)]  # fmt: skip
    a, b = (r.history.drop(columns="seconds") for r in results)
    assert a.equals(b)
    for key, value in results[0].state_dict.items():
        assert torch.equal(value, results[1].state_dict[key]), key
    other = run(tiny_model(), volumes, labels, np.arange(12), np.arange(12, 16), seed=2)
    assert not other.history["train_loss"].equals(results[0].history["train_loss"])


def test_global_random_state_is_restored():
    volumes, labels = cube_volumes(n=8)
    model = tiny_model()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(model, volumes, labels, np.arange(6), np.arange(6, 8), epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_best_epoch_is_lowest_val_loss_earliest_on_ties(monkeypatch):
    volumes, labels = cube_volumes(n=12)
    losses = iter([0.5, 0.3, 0.3, 0.4])
    monkeypatch.setattr(loop, "_evaluate", lambda *args: (next(losses), 0.5))
    model = tiny_model()
    result = run(model, volumes, labels, np.arange(8), np.arange(8, 12))
    assert result.best_epoch == 2
    assert result.history["val_loss"].tolist() == [0.5, 0.3, 0.3, 0.4]
    # the kept weights are those after epoch 2 of the same (deterministic) run; evaluation
    # changes no weights or random state, so a run without validation reproduces them
    two = run(tiny_model(), volumes, labels, np.arange(8), [], epochs=2)
    for key, value in two.state_dict.items():
        assert torch.equal(result.state_dict[key], value), key
        assert torch.equal(model.state_dict()[key], value), key  # model holds the best


def test_without_validation_the_last_epoch_is_kept():
    volumes, labels = cube_volumes(n=8)
    model = tiny_model()
    result = run(model, volumes, labels, np.arange(8), [], epochs=3)
    assert result.best_epoch == 3
    assert result.history["val_loss"].isna().all()
    for key, value in model.state_dict().items():
        assert torch.equal(result.state_dict[key], value)


@pytest.mark.parametrize("training", [True, False])
def test_predict_restores_mode_and_is_batch_invariant(training):
    volumes, _ = cube_volumes(n=6)
    model = tiny_model().train(training)
    one = predict_volumes(model, volumes, range(6), batch_size=1, device="cpu")
    assert model.training is training
    six = predict_volumes(model, volumes, range(6), batch_size=6, device="cpu")
    np.testing.assert_allclose(one, six, rtol=1e-5, atol=1e-6)
    assert predict_volumes(model, volumes, [], device="cpu").shape == (0, 2)


def test_regression_standardises_targets_and_improves():
    # Both checks compare the MAE with predicting the training mean (the first epoch's
    # MAE is no yardstick: with BatchNorm recalibration it can be good already, and the
    # best epoch then reached 0.73 of it). With 40 training volumes the ratios are
    # 0.07-0.35 (best validation epoch) and 0.11-0.36 (test) over model and batch-order
    # seeds 0-9 (1 thread) and 0-4 (2 threads), with and without BatchNorm
    # recalibration; these seeds: 0.07-0.12 and 0.15-0.19. With 28 volumes the worst
    # seed reached 0.56.
    rng = np.random.default_rng(1)
    n = 56
    brightness = rng.uniform(0.0, 3.0, n)
    volumes = rng.normal(0.0, 1.0, (n, SIZE, SIZE, SIZE)).astype(np.float32)
    volumes[:, 8:16, 8:16, 8:16] += brightness[:, None, None, None].astype(np.float32)
    ages = 40.0 + 10.0 * brightness
    model = tiny_model(n_classes=1)
    train, val, test = np.arange(40), np.arange(40, 48), np.arange(48, 56)
    result = run(model, list(volumes), ages, train, val, task="regression", epochs=20)
    assert result.target_stats == pytest.approx((ages[train].mean(), ages[train].std()))
    assert "val_mae" in result.history
    trivial = {
        k: np.abs(ages[idx] - ages[train].mean()).mean()
        for k, idx in [("val", val), ("test", test)]
    }
    assert result.history["val_mae"].min() < 0.6 * trivial["val"]
    pred = predict_volumes(model, list(volumes), test, device="cpu", task="regression",
                           target_stats=result.target_stats)  # fmt: skip
    assert pred.shape == (8,)
    assert np.abs(pred - ages[test]).mean() < 0.6 * trivial["test"]


def test_input_errors():
    volumes, labels = cube_volumes(n=8)
    model = tiny_model()
    with pytest.raises(DataLeakageError, match="both train_idx and val_idx"):
        run(model, volumes, labels, np.arange(6), [5, 6])
    with pytest.raises(ConfigError, match="integer class indices"):
        run(model, volumes, labels + 0.5, np.arange(6), [6, 7])
    with pytest.raises(ShapeError, match="target class 2"):
        run(model, volumes, labels * 2, np.arange(6), [6, 7])
    with pytest.raises(ShapeError, match="n_classes=1"):
        run(model, volumes, labels.astype(float), np.arange(6), [6, 7], task="regression")
    with pytest.raises(ConfigError, match="epochs"):
        run(model, volumes, labels, np.arange(6), [6, 7], epochs=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_path():
    volumes, labels = cube_volumes(n=12)
    model = tiny_model()
    result = run(model, volumes, labels, np.arange(8), np.arange(8, 12), device="cuda", amp=True)
    assert np.isfinite(result.history[["train_loss", "val_loss"]].to_numpy()).all()
    assert next(model.parameters()).device.type == "cpu"  # moved back
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
    proba = predict_volumes(model, volumes, range(4), device="cuda")
    assert proba.shape == (4, 2) and np.isfinite(proba).all()


def test_progress_bar_is_labelled(capsys):
    volumes, labels = cube_volumes(n=6)
    run(tiny_model(), volumes, labels, np.arange(4), [4, 5], epochs=1, progress=True,
        desc="fold 1/3")  # fmt: skip
    assert "fold 1/3" in capsys.readouterr().err


def bn_first_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm3d(1), torch.nn.Flatten(), torch.nn.Linear(64, 2))


@pytest.mark.parametrize("val_idx", [np.arange(12, 16), []])
def test_bn_recalibration_sets_running_stats_to_training_batch_statistics(val_idx):
    # BatchNorm is the first layer, so its input is the volumes themselves: after
    # recalibration its running statistics are the mean over the training batches (in
    # order, 4 volumes each) of the batch mean and of the unbiased batch variance
    rng = np.random.default_rng(0)
    volumes = list(rng.normal(2.0, 3.0, (16, 4, 4, 4)).astype(np.float32))
    labels = np.arange(16) % 2
    models, histories = {}, {}
    for flag in (True, False):
        models[flag] = bn_first_model()
        result = run(models[flag], volumes, labels, np.arange(12), val_idx, epochs=2,
                     bn_recalibration=flag)  # fmt: skip
        histories[flag] = result.history
    batches = np.stack(volumes[:12]).astype(np.float64).reshape(3, -1)
    bn = models[True][0]
    assert bn.running_mean.item() == pytest.approx(batches.mean(axis=1).mean(), rel=1e-5)
    assert bn.running_var.item() == pytest.approx(batches.var(axis=1, ddof=1).mean(), rel=1e-5)
    # without it: a moving average (momentum 0.1) from 0 that is still far from 2
    assert models[False][0].running_mean.item() < 1.0
    # training is the same either way: only the statistics used in eval mode change
    assert histories[True]["train_loss"].equals(histories[False]["train_loss"])


def test_bn_recalibration_leaves_training_and_random_state_unchanged():
    volumes, labels = cube_volumes(n=12)
    results = {}
    for flag in (True, False):
        torch.manual_seed(5)
        results[flag] = (run(tiny_model(), volumes, labels, np.arange(12), [], epochs=3,
                             bn_recalibration=flag), torch.rand(1))  # fmt: skip
    (new, after_new), (old, after_old) = results[True], results[False]
    assert torch.equal(after_new, after_old)
    assert new.history["train_loss"].equals(old.history["train_loss"])  # dropout draws kept
    for key, value in new.state_dict.items():  # same weights, other BatchNorm statistics
        statistic = key.endswith(("running_mean", "running_var", "num_batches_tracked"))
        assert torch.equal(value, old.state_dict[key]) is not statistic, key
