"""The run folder: its layout (every path, named once), its typed configuration, the
reader :class:`RunFolder`, the writer's lock and the per-stage option records.

Torch-free: every stage can open a run folder.
"""

from brainmaps.run.config import (
    DataConfig,
    ExecutionConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    load_config,
)
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.layout import RunLayout, map_filename
from brainmaps.run.lock import RunLockedError, run_lock
from brainmaps.run.stages import StageOptionsError, check_stage, read_stage, write_stage

__all__ = [
    "DataConfig",
    "ExecutionConfig",
    "ModelConfig",
    "RunConfig",
    "RunFolder",
    "RunLayout",
    "RunLockedError",
    "StageOptionsError",
    "TrainingConfig",
    "check_stage",
    "load_config",
    "map_filename",
    "open_run",
    "read_stage",
    "run_lock",
    "write_stage",
]
