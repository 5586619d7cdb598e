"""Training: the training loop, cross-validated runs, ensembles.

Cross-validation splits and metrics live in :mod:`brainmaps.evaluation`. The names below
are imported on first use (PEP 562), so ``import brainmaps.training`` does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainmaps.utils import lazy_exports

if TYPE_CHECKING:  # what static tools see; at run time names load on first use (PEP 562)
    from brainmaps.models.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
    from brainmaps.training.ensembles import predict_run
    from brainmaps.training.run import RunResult, train_run

#: Module (relative to this package, or absolute) -> the public names it defines,
#: exported here and imported on first use.
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "brainmaps.models.checkpoints": ("load_checkpoint", "model_from_checkpoint", "save_checkpoint"),
    ".ensembles": ("predict_run",),
    ".run": ("RunResult", "train_run"),
}
__all__ = [
    "RunResult",
    "load_checkpoint",
    "model_from_checkpoint",
    "predict_run",
    "save_checkpoint",
    "train_run",
]

__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES)
