"""Tests of brainmaps.data.cache: reuse, invalidation, order, parallelism, failures."""

from __future__ import annotations

import json
import os
import pickle
import threading
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

import brainmaps.data.cache as cache_mod
from brainmaps.data.cache import CachedVolumes, cache_folder, cache_volumes
from brainmaps.data.preprocess import PreprocessConfig, preprocess_img
from brainmaps.exceptions import ConfigError, ImageError

CONFIG = PreprocessConfig(grid_shape=(8, 10, 8))
COARSE = np.diag([24.0, 28.0, 24.0, 1.0])  # 8^3 voxels covering the whole MNI box
COARSE[:3, 3] = [-96.0, -130.0, -80.0]


@pytest.fixture
def write_nifti(tmp_path):
    """Factory ``write_nifti(name, data=None, affine=None) -> Path`` in ``tmp_path``."""

    def write(name="img.nii.gz", data=None, affine=None):
        if data is None:
            data = np.random.default_rng(0).uniform(1, 10, size=(8, 9, 10)).astype(np.float32)
        affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
        nib.save(nib.Nifti1Image(np.asarray(data), affine), tmp_path / name)
        return tmp_path / name

    return write


@pytest.fixture
def scans(write_nifti):
    """Four small scans with different contents."""
    rng = np.random.default_rng(0)
    return [
        write_nifti(f"s{i}.nii.gz", rng.uniform(1, 10, (8, 8, 8)).astype(np.float32), COARSE)
        for i in range(4)
    ]


@pytest.fixture
def counter(monkeypatch):
    """Count the calls of preprocess_img made by the cache (in-process, n_jobs=1)."""
    calls = []

    def counting(path, config):
        calls.append(os.path.basename(path))
        return preprocess_img(path, config)

    monkeypatch.setattr(cache_mod, "preprocess_img", counting)
    return calls


def test_values_and_order_follow_paths(scans, tmp_path):
    order = [scans[2], scans[0], scans[2], scans[3]]
    volumes = cache_volumes(order, CONFIG, tmp_path / "cache", progress=False)
    assert volumes.shape == (4, 8, 10, 8) and len(volumes) == 4
    for i, path in enumerate(order):
        np.testing.assert_array_equal(volumes[i], preprocess_img(path, CONFIG))
    assert volumes.slots[0] == volumes.slots[2]  # the same file is stored once
    assert volumes[-1].dtype == np.float32
    np.testing.assert_array_equal(volumes[-1], volumes[3])
    with pytest.raises(IndexError):
        volumes[4]
    first = volumes[0]
    first[:] = 0  # a copy: the cache is not modified
    assert volumes[0].any()


def test_second_call_computes_nothing(scans, tmp_path, counter):
    first = cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    assert sorted(counter) == ["s0.nii.gz", "s1.nii.gz", "s2.nii.gz", "s3.nii.gz"]
    counter.clear()
    again = cache_volumes(scans[::-1], CONFIG, tmp_path / "cache", progress=False)
    assert counter == []
    np.testing.assert_array_equal(again[0], first[3])
    more = cache_volumes(scans[:2], CONFIG, tmp_path / "cache", progress=False)
    assert counter == [] and more.slots.tolist() == first.slots[:2].tolist()


def test_manifest_layout(scans, tmp_path):
    volumes = cache_volumes(scans[:2], CONFIG, tmp_path / "cache", progress=False)
    folder = cache_folder(CONFIG, tmp_path / "cache")
    assert volumes.path == folder / "volumes.f32"
    assert os.path.getsize(volumes.path) == 2 * 8 * 10 * 8 * 4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["config"] == CONFIG.to_dict() and manifest["grid_shape"] == [8, 10, 8]
    assert sorted(manifest["slots"].values()) == [0, 1]
    assert sorted(manifest["paths"].values()) == [str(scans[0]), str(scans[1])]


def test_touched_or_changed_file_is_recomputed(scans, tmp_path, counter, write_nifti):
    cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    counter.clear()
    stat = os.stat(scans[1])
    os.utime(scans[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    assert counter == ["s1.nii.gz"]
    counter.clear()
    new = np.random.default_rng(5).uniform(1, 10, (8, 8, 8)).astype(np.float32)
    write_nifti("s2.nii.gz", new, COARSE)
    volumes = cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    assert counter == ["s2.nii.gz"]
    np.testing.assert_array_equal(volumes[2], preprocess_img(scans[2], CONFIG))
    assert volumes.path.stat().st_size == 6 * 8 * 10 * 8 * 4  # grew by two slots


def test_changed_parameter_is_recomputed(scans, tmp_path, counter):
    base = cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    counter.clear()
    other = PreprocessConfig(grid_shape=(8, 10, 8), normalization="minmax")
    volumes = cache_volumes(scans, other, tmp_path / "cache", progress=False)
    assert len(counter) == 4 and volumes.path.parent != base.path.parent
    assert volumes[0].min() == 0 and volumes[0].max() == 1
    np.testing.assert_array_equal(volumes[1], preprocess_img(scans[1], other))


def test_parallel_matches_serial(scans, tmp_path):
    serial = cache_volumes(scans, CONFIG, tmp_path / "one", n_jobs=1, progress=False)
    parallel = cache_volumes(scans, CONFIG, tmp_path / "two", n_jobs=2, progress=False)
    for i in range(len(scans)):
        np.testing.assert_array_equal(parallel[i], serial[i])


def test_failing_file_keeps_completed_ones(scans, tmp_path, counter):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"definitely not an image")
    paths = [scans[0], bad, scans[1]]
    with pytest.raises(ImageError, match=r"bad\.nii\.gz could not be read"):
        cache_volumes(paths, CONFIG, tmp_path / "cache", progress=False)
    counter.clear()
    volumes = cache_volumes(scans[:2], CONFIG, tmp_path / "cache", progress=False)
    assert counter == []  # both good files were kept
    np.testing.assert_array_equal(volumes[1], preprocess_img(scans[1], CONFIG))
    with pytest.raises(ImageError, match=r"gone\.nii\.gz cannot be cached"):
        cache_volumes([tmp_path / "gone.nii.gz"], CONFIG, tmp_path / "cache", progress=False)


def test_pickle_is_cheap_and_reopens(scans, tmp_path):
    volumes = cache_volumes(scans, CONFIG, tmp_path / "cache", progress=False)
    volumes[0]  # opens the memory map
    blob = pickle.dumps(volumes)
    assert len(blob) < 1500  # path + slots, never the voxels (4 x 2.5 KB)
    back = pickle.loads(blob)
    assert isinstance(back, CachedVolumes) and back.shape == volumes.shape
    for i in range(len(volumes)):
        np.testing.assert_array_equal(back[i], volumes[i])


def test_peak_memory_does_not_grow_with_n(write_nifti, tmp_path):
    config = PreprocessConfig(grid_shape=(32, 32, 32), normalization="none")
    rng = np.random.default_rng(1)
    paths = [
        write_nifti(f"m{i}.nii.gz", rng.uniform(1, 2, (8, 8, 8)).astype(np.float32), COARSE)
        for i in range(16)
    ]
    volume_bytes = 32**3 * 4
    tracemalloc.start()
    try:
        volumes = cache_volumes(paths, config, tmp_path / "cache", progress=False)
        total = sum(float(v.sum()) for v in volumes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total > 0
    assert peak < 6 * volume_bytes < len(paths) * volume_bytes  # a few volumes, not all 16


def test_building_waits_for_the_lock(scans, tmp_path):
    folder = cache_folder(CONFIG, tmp_path / "cache")
    result = {}

    def build():
        result["volumes"] = cache_volumes(scans[:1], CONFIG, tmp_path / "cache", progress=False)

    with cache_mod._locked(folder):
        worker = threading.Thread(target=build)
        worker.start()
        worker.join(timeout=0.3)
        assert worker.is_alive()  # blocked by the lock held here
    worker.join(timeout=10)
    assert not worker.is_alive() and len(result["volumes"]) == 1


def test_bad_n_jobs(scans, tmp_path):
    with pytest.raises(ConfigError, match="n_jobs must be a non-zero integer"):
        cache_volumes(scans, CONFIG, tmp_path / "cache", n_jobs=0, progress=False)
