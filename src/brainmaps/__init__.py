"""brainmaps: train 3D CNNs on brain MRI and explain them voxel by voxel."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainmaps")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from brainmaps.exceptions import (
    BrainmapsError,
    BrainmapsWarning,
    DataLeakageError,
)

__all__ = ["BrainmapsError", "BrainmapsWarning", "DataLeakageError", "__version__"]
