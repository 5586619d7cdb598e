"""Training: configuration, cross-validation, the training loop, checkpoints, ensembles."""

from brainmaps.training.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from brainmaps.training.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    load_config,
)
from brainmaps.training.cross_validation import check_no_leakage, inner_split, make_folds
from brainmaps.training.ensembles import predict_run
from brainmaps.training.metrics import classification_metrics, regression_metrics
from brainmaps.training.run import RunResult, train_run

__all__ = [
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "RunResult",
    "TrainingConfig",
    "check_no_leakage",
    "classification_metrics",
    "inner_split",
    "load_checkpoint",
    "load_config",
    "make_folds",
    "model_from_checkpoint",
    "predict_run",
    "regression_metrics",
    "save_checkpoint",
    "train_run",
]
