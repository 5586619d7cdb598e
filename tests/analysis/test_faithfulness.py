"""Deletion/insertion curves on a known model: the oracle map must beat random and anti-oracle."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from brainmaps.analysis.faithfulness import (
    curve_auc,
    deletion_curve,
    fill_volume,
    insertion_curve,
    random_attribution,
    rank_voxels,
)
from brainmaps.exceptions import ConfigError, ImageError, ShapeError

SHAPE = (16, 16, 16)
CUBE = (slice(4, 8), slice(5, 9), slice(6, 10))  # 64 voxels of 4096


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class CubeModel:
    """p(class 1) = sigmoid(4 * (mean intensity inside the cube - 1)); records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append((batch.shape, batch.dtype))
        p = _sigmoid(4.0 * (batch[(slice(None), *CUBE)].mean(axis=(1, 2, 3)) - 1.0))
        return np.column_stack([1 - p, p])


@pytest.fixture()
def volume():
    x = np.random.default_rng(0).normal(0.0, 0.3, SHAPE).astype(np.float32)
    x[CUBE] += 3.0
    return x


def _maps():
    oracle = np.zeros(SHAPE, dtype=np.float32)
    oracle[CUBE] = 1.0
    return {"oracle": oracle, "anti": -oracle, "random": random_attribution(SHAPE, 1)}


def _aucs(volume, mode):
    out = {}
    for name, a in _maps().items():
        f, p = deletion_curve(CubeModel(), volume, a, 1, mode=mode, fill="zero")
        out[name] = curve_auc(f, p)
    return out


def test_oracle_map_is_most_faithful_in_deletion(volume):
    auc = _aucs(volume, "deletion")
    # oracle: the cube is gone after 64 / 4096 voxels -> p ~ sigmoid(-4) almost at once
    assert auc["oracle"] < 0.06
    assert auc["random"] > auc["oracle"] + 0.3
    assert auc["anti"] > auc["random"] + 0.05  # cube removed only in the last 1.6 %
    assert auc["anti"] > 0.9


def test_oracle_map_is_most_faithful_in_insertion(volume):
    auc = _aucs(volume, "insertion")
    assert auc["oracle"] > 0.9
    assert auc["oracle"] > auc["random"] + 0.3
    assert auc["anti"] < auc["random"] - 0.05
    assert auc["anti"] < 0.06


def test_curve_endpoints_are_original_and_filled(volume):
    model = CubeModel()
    original = model(volume[None])[0, 1]
    blurred = gaussian_filter(volume, sigma=1.5, mode="nearest")
    fully_filled = model(blurred[None])[0, 1]
    a = _maps()["random"]
    f, p = deletion_curve(model, volume, a, 1, fill="blur", sigma=1.5, steps=10)
    np.testing.assert_allclose(f, np.linspace(0, 1, 11))
    assert p[0] == pytest.approx(original, abs=1e-6)
    assert p[-1] == pytest.approx(fully_filled, abs=1e-5)
    f, p = insertion_curve(model, volume, a, 1, fill="blur", sigma=1.5, steps=10)
    assert p[0] == pytest.approx(fully_filled, abs=1e-5)
    assert p[-1] == pytest.approx(original, abs=1e-6)
    assert original > 0.99 and fully_filled < 0.9


def test_deletion_removes_exactly_the_top_fraction(volume):
    """With an identity 'model' the k-th step has exactly round(f * n) filled voxels."""
    seen = []

    def predict(batch):
        seen.append(batch.copy())
        return np.zeros((len(batch), 2))

    a = np.arange(volume.size, dtype=np.float32).reshape(SHAPE)  # last voxel ranked first
    deletion_curve(predict, volume + 10, a, 0, fill="zero", fractions=[0, 0.25, 1])
    batch = np.concatenate(seen)
    n = volume.size
    assert [(b == 0).sum() for b in batch] == [0, n // 4, n]
    assert np.all(batch[1].ravel()[-n // 4 :] == 0)  # the top-ranked quarter


def test_mask_limits_ranking_and_perturbation(volume):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:12, 2:12, 2:12] = True
    seen = []

    def predict(batch):
        seen.append(batch.copy())
        return np.zeros((len(batch), 2))

    deletion_curve(predict, volume, _maps()["random"], 0, mask=mask, fill="mean", steps=4)
    full = np.concatenate(seen)[-1]
    np.testing.assert_array_equal(full[~mask], volume[~mask])
    np.testing.assert_allclose(full[mask], volume[mask].mean(), rtol=1e-5)


def test_batching_does_not_change_the_curve(volume):
    model = CubeModel()
    a = _maps()["random"]
    _, p1 = deletion_curve(model, volume, a, 1, batch_size=1, steps=8)
    assert all(shape == (1, *SHAPE) and dtype == np.float32 for shape, dtype in model.calls)
    _, p2 = deletion_curve(CubeModel(), volume, a, 1, batch_size=32, steps=8)
    np.testing.assert_allclose(p1, p2, rtol=1e-6)


def test_regression_output_with_no_target(volume):
    def predict(batch):
        return batch.reshape(len(batch), -1).sum(axis=1)

    a = np.ones(SHAPE, dtype=np.float32)
    f, p = deletion_curve(predict, np.ones(SHAPE, np.float32), a, None, fill="zero", steps=4)
    np.testing.assert_allclose(p, volume.size * (1 - f))
    assert curve_auc(f, p) == pytest.approx(volume.size / 2)


def test_ties_are_broken_at_random_not_by_position():
    order = rank_voxels(np.zeros(SHAPE), random_state=0)
    assert sorted(order.tolist()) == list(range(np.prod(SHAPE)))
    first = np.unravel_index(order[: len(order) // 4], SHAPE)[0]
    assert 5 < first.mean() < 10  # spread over the volume, not the first 4 x-slices
    np.testing.assert_array_equal(order, rank_voxels(np.zeros(SHAPE), random_state=0))
    a = np.zeros(SHAPE)
    a[1, 2, 3] = -5.0
    assert rank_voxels(a, absolute=True)[0] == np.ravel_multi_index((1, 2, 3), SHAPE)
    assert rank_voxels(a)[-1] == np.ravel_multi_index((1, 2, 3), SHAPE)


def test_curve_auc_known_values():
    f = np.linspace(0, 1, 11)
    assert curve_auc(f, np.ones(11)) == pytest.approx(1.0)
    assert curve_auc(f, f) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="increase"):
        curve_auc([0.5, 0.2], [1, 1])


def test_fill_volume_options(volume):
    assert np.all(fill_volume(volume, "zero") == 0)
    np.testing.assert_allclose(fill_volume(volume, "mean"), volume.mean(), rtol=1e-5)
    blurred = fill_volume(volume, "blur", sigma=2.0)
    np.testing.assert_allclose(blurred, gaussian_filter(volume, 2.0, mode="nearest"), atol=1e-6)
    with pytest.raises(ConfigError, match="fill"):
        fill_volume(volume, "noise")


def test_bad_inputs_raise_clear_errors(volume):
    model = CubeModel()
    a = _maps()["oracle"]
    with pytest.raises(ShapeError, match="one shape"):
        deletion_curve(model, volume, a[:8], 1)
    with pytest.raises(ConfigError, match="mode"):
        deletion_curve(model, volume, a, 1, mode="both")
    bad = a.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        deletion_curve(model, volume, bad, 1)
    with pytest.raises(ConfigError, match="empty"):
        deletion_curve(model, volume, a, 1, mask=np.zeros(SHAPE, bool))
    with pytest.raises(ConfigError, match="target"):
        deletion_curve(model, volume, a, 5)
    with pytest.raises(ShapeError, match="target=None"):
        deletion_curve(model, volume, a, None)
    with pytest.raises(ConfigError, match="steps"):
        deletion_curve(model, volume, a, 1, steps=0)


def test_module_does_not_import_torch():
    code = (
        "import sys, brainmaps.analysis.faithfulness; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
