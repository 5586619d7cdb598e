"""Steps run on a run folder: each records which options made its outputs.

A step reads what earlier stages wrote, holds the run folder's lock while it writes, and
records its resolved options in ``stages/<stage>.yaml`` (see :mod:`brainmaps.run.stages`),
so running it again with the same options resumes, and with other options either
recomputes (``overwrite=True``) or refuses with a message naming what changed.
"""

from brainmaps.steps.explain import explain

__all__ = ["explain"]
