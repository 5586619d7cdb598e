"""Shared fixtures: tiny synthetic cohorts and the location of ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Tests run on 2 cores; one intra-op thread keeps timings stable and results reproducible.
torch.set_num_threads(1)


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
