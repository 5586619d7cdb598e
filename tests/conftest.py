"""Shared fixtures: tiny synthetic cohorts, a trained tiny run, and the location of ../shared.

Threads: the whole session runs with ``torch.set_num_threads(N)``, N taken from the
environment variable ``BRAINMAPS_TEST_THREADS`` (default 1: the suite runs on 2 cores, and
one intra-op thread keeps timings stable). It is set when this file is imported and again
by the session-scoped autouse fixture ``_torch_threads``, so no test module can change it
for the others; test modules do not set it themselves. The pytest header shows N.

Trained weights are not bitwise identical across machines (CPU kernels, thread counts):
an assertion on a trained model's output carries a margin measured over several seeds
and over 1 and 2 threads, written next to it; ``BRAINMAPS_TEST_THREADS=2 pytest`` checks
that they hold. Exact equality is asserted only between two runs in one process
(determinism, resume).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _test_threads() -> int:
    value = os.environ.get("BRAINMAPS_TEST_THREADS", "1")
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(
            f"BRAINMAPS_TEST_THREADS must be a positive integer, got {value!r}; unset it "
            "for one thread."
        )
    return int(value)


TEST_THREADS = _test_threads()
torch.set_num_threads(TEST_THREADS)


def pytest_report_header(config) -> str:
    return f"torch threads: {TEST_THREADS} (BRAINMAPS_TEST_THREADS)"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Set the session's thread count before any session fixture trains a model."""
    torch.set_num_threads(TEST_THREADS)
    yield
    assert torch.get_num_threads() == TEST_THREADS, "a test changed torch's thread count"


def shared_data(*parts: str) -> Path:
    """Return a path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (../shared is absent on this machine)")
    return path


STRONG_REGIONS = (
    "left_superior_frontal",
    "right_superior_frontal",
    "precuneus",
    "left_hippocampus",
    "right_hippocampus",
)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A 40-subject synthetic cohort at 4 mm with a strong, wide planted group effect.

    Intensity decrease at the largest allowed size in five regions, so that a tiny CNN on
    the 8 mm test grid learns it in a few epochs.
    """
    from brainmaps.data.synthetic import make_synthetic_cohort

    out = tmp_path_factory.mktemp("cohort") / "synth"
    make_synthetic_cohort(
        out,
        n_subjects=40,
        seed=3,
        voxel_size=4.0,
        effect="intensity",
        effect_size=0.5,
        regions=STRONG_REGIONS,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_cohort, tmp_path_factory) -> Path:
    """A finished 3-fold run folder on ``tiny_cohort`` (trained once per test session).

    Treat it as read-only: write outputs elsewhere or into a copy.
    """
    from brainmaps.training.run import train_run
    from tiny import tiny_config

    base = tmp_path_factory.mktemp("tiny_run")
    config = tiny_config(tiny_cohort, base / "run", base / "cache")
    train_run(config, progress=False)
    return base / "run"


@pytest.fixture(scope="session")
def age_run(tmp_path_factory):
    """A 3-fold xin2019 age regression on 80 synthetic subjects (age effect 0.5, the
    strongest allowed) with LRP composite maps; about 20 s on one core.

    Shared by the brain-age map and anatomy tests; treat it as read-only (copy it).
    """
    from brainmaps.attribution.cohort import explain_run
    from brainmaps.data.synthetic import make_synthetic_cohort
    from brainmaps.training.run import train_run
    from tiny import tiny_config

    root = tmp_path_factory.mktemp("age")
    cohort = root / "synth"
    make_synthetic_cohort(
        cohort, n_subjects=80, seed=3, voxel_size=4.0, age_effect=0.5, progress=False
    )
    config = tiny_config(cohort, root / "run", root / "cache", seed=0, epochs=40)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, target="age"))
    train_run(config)
    explain_run(root / "run", ["lrp"], options={"lrp": {"rule": "composite"}}, progress=False)
    return root / "run"
