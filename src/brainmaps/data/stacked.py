"""Volumes of several channels: the per-file cache of each channel, stacked on read.

With ``C > 1`` channels (:mod:`brainmaps.data.channels`) every image of every channel
has its own slot in the per-file cache (:func:`~brainmaps.data.cache.cache_volumes`), so
no image is preprocessed twice, and :class:`StackedVolumes` reads volume ``i`` as a
``(C, X, Y, Z)`` float32 array. A run's ``cohort.tsv`` keeps ``cache_slot`` (the first
channel's slot) and adds ``cache_slot_<name>`` for the others (:func:`slot_columns`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from brainmaps.data.cache import CachedVolumes, cache_volumes
from brainmaps.data.channels import channel_columns
from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.exceptions import ConfigError, ShapeError

__all__ = ["StackedVolumes", "cache_channels", "slot_columns"]


class StackedVolumes:
    """Read-only view of several channels of cached volumes, stacked on read.

    Parameters
    ----------
    parts : sequence of CachedVolumes
        One view per channel, of the same length and grid.
    channels : sequence of str
        The channel names, in the order of ``parts``.

    Notes
    -----
    ``volumes[i]`` is a ``float32`` array ``(C, X, Y, Z)``: channel ``c`` is
    ``parts[c][i]``. Pickling stores the parts (paths, slots, grid), so PyTorch
    ``DataLoader`` workers can share the view.
    """

    def __init__(self, parts: Sequence[CachedVolumes], channels: Sequence[str]) -> None:
        parts, channels = list(parts), tuple(channels)
        if len(parts) != len(channels) or not parts:
            raise ShapeError(
                f"{len(parts)} volume views for {len(channels)} channel names; give one view "
                "per channel."
            )
        if len({len(p) for p in parts}) > 1 or len({p.grid_shape for p in parts}) > 1:
            raise ShapeError(
                "the channels have different numbers of volumes or grids: "
                + ", ".join(f"{n}: {p.shape}" for n, p in zip(channels, parts, strict=True))
            )
        self._parts, self._channels = parts, channels

    @property
    def channels(self) -> tuple[str, ...]:
        """tuple of str : The channel names."""
        return self._channels

    @property
    def parts(self) -> list[CachedVolumes]:
        """list of CachedVolumes : The view of each channel."""
        return list(self._parts)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """tuple of int : Shape ``(X, Y, Z)`` of one channel of one volume."""
        return self._parts[0].grid_shape

    @property
    def shape(self) -> tuple[int, ...]:
        """tuple of int : ``(N, C, X, Y, Z)``."""
        return (len(self), len(self._channels), *self.grid_shape)

    @property
    def slots(self) -> np.ndarray:
        """numpy.ndarray of int64 : ``(N, C)`` cache slot of each channel of each volume."""
        slots = np.stack([p.slots for p in self._parts], axis=1)
        slots.setflags(write=False)
        return slots

    def __len__(self) -> int:
        return len(self._parts[0])

    def __getitem__(self, index: int) -> np.ndarray:
        """Return a copy of volume ``index``: ``float32`` ``(C, X, Y, Z)``."""
        return np.stack([p[index] for p in self._parts]).astype(np.float32, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"StackedVolumes({len(self)} volumes of {len(self._channels)} channels "
            f"({', '.join(self._channels)}) of {self.grid_shape})"
        )


def cache_channels(
    table: pd.DataFrame,
    channels: Sequence[str],
    config: PreprocessConfig,
    cache_dir: str | os.PathLike,
    *,
    n_jobs: int = 1,
    progress: bool = True,
) -> CachedVolumes | StackedVolumes:
    """Cache the images of every channel of ``table`` and return the volume store.

    Parameters
    ----------
    table : pandas.DataFrame
        A cohort table (or a run's ``cohort.tsv``): ``path``, and ``path_<name>`` for the
        channels after the first.
    channels : sequence of str
        The channel names (:attr:`Cohort.channels <brainmaps.data.cohort.Cohort.channels>`);
        one name or none means one channel.
    config : PreprocessConfig
        How every channel is preprocessed.
    cache_dir : path-like
        The cache root (:func:`~brainmaps.data.cache.cache_volumes`).
    n_jobs : int
        Parallel workers, shared by all channels' files.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CachedVolumes or StackedVolumes
        One channel: exactly :func:`~brainmaps.data.cache.cache_volumes` of ``path``.
        Several: a :class:`StackedVolumes` of ``(C, X, Y, Z)`` volumes.

    Raises
    ------
    ConfigError
        If a channel's column is missing from ``table``.
    """
    columns = channel_columns(channels)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ConfigError(
            f"the cohort table has no column {', '.join(missing)} for channel(s) "
            f"{', '.join(channels)}; the run folder is inconsistent, train it again."
        )
    if len(columns) == 1:
        return cache_volumes(
            table["path"].tolist(), config, cache_dir, n_jobs=n_jobs, progress=progress
        )
    paths = [p for c in columns for p in table[c].tolist()]
    every = cache_volumes(paths, config, cache_dir, n_jobs=n_jobs, progress=progress)
    n = len(table)
    parts = [
        CachedVolumes(every.path, every.slots[c * n : (c + 1) * n], every.grid_shape)
        for c in range(len(columns))
    ]
    return StackedVolumes(parts, channels)


def slot_columns(volumes: CachedVolumes | StackedVolumes) -> dict[str, np.ndarray]:
    """``{"cache_slot": ..., "cache_slot_<name>": ...}``: the cohort.tsv slot columns.

    One channel gives ``cache_slot`` only (as before channels existed).
    """
    if not isinstance(volumes, StackedVolumes):
        return {"cache_slot": volumes.slots}
    names = channel_columns(volumes.channels, "cache_slot")
    return {name: volumes.slots[:, c] for c, name in enumerate(names)}
