"""Per-channel maps of a run with several input channels (used by :func:`explain_run
<brainmaps.attribution.cohort.explain_run>`).

Methods with :attr:`~brainmaps.attribution.base.AttributionMethod.channel_maps` are
called with ``keep_channels=True``; each channel's map goes to
``maps/<method>/channel-<name>/`` (paths from :class:`~brainmaps.run.layout.RunLayout`)
and the subject's map is their sum.
"""

from __future__ import annotations

import numpy as np

from brainmaps.attribution.base import get_method
from brainmaps.data.io import save_img
from brainmaps.data.stacked import StackedVolumes
from brainmaps.run.folder import RunFolder

__all__ = ["map_channels", "save_channel_maps", "with_channel_maps"]


def map_channels(volumes, methods: list[str]) -> dict[str, tuple[str, ...]]:
    """The input channels each method writes maps of (``()``: the summed map only)."""
    names = volumes.channels if isinstance(volumes, StackedVolumes) else ()
    return {m: names if get_method(m).channel_maps else () for m in methods}


def with_channel_maps(run: RunFolder, method: str, done: dict, channels) -> dict:
    """The finished maps whose channel maps exist too (the others are made again)."""
    return {
        name: row
        for name, row in done.items()
        if all(
            run.layout.channel_subject_map(method, c, row["subject"], row["session"]).is_file()
            for c in channels
        )
    }


def save_channel_maps(run: RunFolder, method: str, channels, row, maps: np.ndarray):
    """Write each channel's map ``maps[c]``; return their sum (the subject's map)."""
    subject, session = str(row["subject"]), str(row["session"])
    for c, channel in enumerate(channels):
        path = run.layout.channel_subject_map(method, channel, subject, session)
        save_img(run.grid.to_img(maps[c]), path)
    return maps.sum(axis=0)
