"""Voxel SVM: float32 matrix (memmap), kernels standardised on training rows only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.preprocessing import StandardScaler

from brainmaps.baselines.voxels import (
    KernelSVC,
    cross_validate_voxels,
    fold_kernel,
    nonzero_mask,
    voxel_matrix,
)
from brainmaps.exceptions import ShapeError


def _volumes(n=12, shape=(4, 5, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(n)]


def test_voxel_matrix_rows_are_masked_volumes(tmp_path):
    volumes = _volumes()
    mask = np.zeros((4, 5, 3), dtype=bool)
    mask[1:3, :, 1] = True
    x = voxel_matrix(volumes, mask)
    assert x.dtype == np.float32 and x.shape == (12, 10)
    np.testing.assert_array_equal(x[3], volumes[3][mask])
    mapped = voxel_matrix(volumes, mask, memmap_threshold=0, temp_dir=tmp_path)
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(mapped), x)
    assert list(tmp_path.iterdir()) == []  # the backing file is unlinked at once
    with pytest.raises(ShapeError, match="empty"):
        voxel_matrix(volumes, np.zeros_like(mask))


def test_nonzero_mask_is_the_union():
    a, b = np.zeros((2, 2, 2)), np.zeros((2, 2, 2))
    a[0, 0, 0], b[1, 1, 1] = 1.0, -2.0
    assert nonzero_mask([a, b]).sum() == 2


def test_kernels_use_training_statistics_only():
    x = np.vstack([v.ravel() for v in _volumes(n=10)])
    x[:, :5] *= np.linspace(1, 30, 5)  # voxels of very different scales
    x[7:, 3] += 40.0  # the test rows are shifted in one voxel
    x[:, 8] = 5.0  # a constant voxel: zero after scaling, as in StandardScaler
    train, test = np.arange(7), np.arange(7, 10)
    scaler = StandardScaler().fit(x[train])
    z = scaler.transform(x)
    s = float(np.mean(np.sum(z[train] ** 2, axis=1)))
    k_train, k_test = fold_kernel(x.astype(np.float32), train, test, "linear", block_bytes=256)
    np.testing.assert_allclose(k_train, z[train] @ z[train].T / s, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(k_test, z[test] @ z[train].T / s, rtol=1e-4, atol=1e-5)
    _, k_rbf = fold_kernel(x.astype(np.float32), train, test, "rbf")
    np.testing.assert_allclose(k_rbf, rbf_kernel(z[test], z[train], gamma=1 / s), rtol=1e-4)
    # a scaler fitted on all rows would give another kernel
    z_all = StandardScaler().fit_transform(x)
    assert not np.allclose(k_test, z_all[test] @ z_all[train].T / s, rtol=1e-2)


def test_kernel_svc_gamma_is_a_power_of_the_kernel():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20, 6))
    y = (z[:, 0] > 0).astype(int)
    base = rbf_kernel(z, gamma=1.0 / 6)
    svc = KernelSVC(C=10.0, gamma=0.5).fit(base, y)
    from sklearn.svm import SVC

    ref = SVC(kernel="rbf", C=10.0, gamma=0.5 / 6).fit(z, y)
    np.testing.assert_allclose(svc.decision_function(base), ref.decision_function(z), atol=1e-6)


def test_voxel_svm_learns_a_planted_effect():
    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 15)
    x = rng.normal(size=(30, 200)).astype(np.float32)
    x[:, :20] += 1.5 * y[:, None]  # 20 informative voxels
    folds = np.arange(30) % 3
    for kernel in ("rbf", "linear"):
        result = cross_validate_voxels(x, y, folds, kernel)
        mean = result.metrics.set_index("fold").loc["mean"]
        assert mean["accuracy"] >= 0.85 and mean["roc_auc"] >= 0.9, (kernel, result.metrics)
        np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0)
    # regression on the same voxels: predictions in the target's units
    values = 40.0 + 10.0 * x[:, :20].mean(axis=1)
    result = cross_validate_voxels(x, values, folds, "linear", task="regression")
    assert result.metrics.set_index("fold").loc["mean", "r"] > 0.5
    assert abs(np.mean(result.outputs) - np.mean(values)) < 1.0
