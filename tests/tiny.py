"""Sizes shared by the end-to-end tests (imported as ``from tiny import ...``)."""

#: A model grid for end-to-end tests: the smallest that xin2019's three blocks accept
#: (22 voxels per axis), ~8 mm voxels over the MNI box.
TINY_GRID = (22, 26, 22)
#: Small channel counts so a training run takes seconds.
TINY_CHANNELS = [8, 16, 32]


def tiny_config(source, out, cache, **training):
    """A RunConfig for a 3-fold tiny run on :data:`TINY_GRID` (seconds on 2 cores)."""
    from brainmaps.data.preprocess import PreprocessConfig
    from brainmaps.run.config import (
        DataConfig,
        ExecutionConfig,
        ModelConfig,
        RunConfig,
        TrainingConfig,
    )

    settings = {"folds": 3, "epochs": 20, "lr": 1e-3, "batch_size": 4, "seed": 7}
    settings.update(training)
    execution = {"cache_dir": str(cache), "progress": False}
    for key in ("device", "n_jobs", "num_workers"):
        if key in settings:
            execution[key] = settings.pop(key)
    return RunConfig(
        data=DataConfig(source=str(source), target="group"),
        preprocess=PreprocessConfig(grid_shape=TINY_GRID),
        model=ModelConfig(options={"channels": TINY_CHANNELS}),
        training=TrainingConfig(**settings),
        out=str(out),
        execution=ExecutionConfig(**execution),
    )
