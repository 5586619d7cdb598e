"""Errors and warnings raised by brainmaps.

Every user-facing error derives from :class:`BrainmapsError`. Its message follows
scikit-learn's template: which parameter or file, what was expected, what was found,
and how to fix it. The command-line interface prints the message of a
:class:`BrainmapsError` as one line on stderr and exits non-zero; any other exception is
a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BrainmapsError",
    "BrainmapsWarning",
    "CohortError",
    "ConfigError",
    "DataLeakageError",
    "ImageError",
    "ShapeError",
]


class BrainmapsError(Exception):
    """Base class of all errors caused by user input or configuration."""


class ImageError(BrainmapsError, ValueError):
    """An image file is missing, unreadable, corrupt or holds unusable values."""


class CohortError(BrainmapsError, ValueError):
    """A cohort table or BIDS folder is malformed (columns, labels, duplicates, ...)."""


class ConfigError(BrainmapsError, ValueError):
    """A configuration value or command-line parameter is invalid."""


class ShapeError(BrainmapsError, ValueError):
    """An array or image has a shape that does not fit where it is used."""


class DataLeakageError(BrainmapsError):
    """A split puts the same subject in training and test data."""


class BrainmapsWarning(UserWarning):
    """Warnings emitted by brainmaps (dropped rows, ignored columns, ...)."""
