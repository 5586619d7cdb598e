"""Training: the training loop, cross-validated runs, ensembles.

Cross-validation splits and metrics live in :mod:`brainmaps.evaluation`. The names below
are imported on first use (PEP 562), so ``import brainmaps.training`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
_EXPORTS = {name: module for module, names in _SUBMODULES.items() for name in names}

__all__ = [
    "RunResult",
    "load_checkpoint",
    "model_from_checkpoint",
    "predict_run",
    "save_checkpoint",
    "train_run",
]


def __getattr__(name: str):
    """Import the module that defines ``name`` on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the public names with the module's globals (PEP 562)."""
    return sorted({*globals(), *__all__})
