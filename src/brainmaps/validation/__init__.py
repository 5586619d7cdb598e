"""Shared checks of parameters, paths and images, with scikit-learn-style messages.

Every check names the parameter as the user gave it (``flag="--epochs"`` on the command
line, the keyword otherwise), says what was expected and what was found, and how to fix
it. The bottom layer of brainmaps: it imports only :mod:`brainmaps.exceptions`, the
standard library, NumPy and nibabel.

:func:`check_img` is the one gate through which images enter brainmaps (scans, maps,
masks and label atlases); it refuses a header whose shape the file cannot hold before
any voxel is read.
"""

from __future__ import annotations

from brainmaps.validation.images import NIFTI_SUFFIXES, check_img, check_volume
from brainmaps.validation.params import (
    check_choice,
    check_float,
    check_fraction,
    check_int,
    parse_list,
)
from brainmaps.validation.paths import check_output_dir, check_output_file

__all__ = [
    "NIFTI_SUFFIXES",
    "check_choice",
    "check_float",
    "check_fraction",
    "check_img",
    "check_int",
    "check_output_dir",
    "check_output_file",
    "check_volume",
    "parse_list",
]
