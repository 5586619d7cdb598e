"""Weights from elsewhere: bare state_dict files, key matching, stems, frozen BatchNorm.

Transfer learning (:mod:`brainmaps.training.transfer`) and ``brainmaps import-model``
read weights that brainmaps did not write. This module loads them safely
(``torch.load(..., weights_only=True)``: no code runs on load), pairs their tensors with a
registered model's (by name, else by order and shape) and names, per architecture, the
parameters that form its *stem* and its output layer.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainmaps.exceptions import ConfigError

__all__ = [
    "OUTPUT_LAYER",
    "STEMS",
    "FrozenBatchNorm",
    "freeze_module",
    "load_state_dict_file",
    "match_by_order",
    "stem_prefix",
]

#: The stem of each architecture: the module whose parameters ``transfer="stem"`` copies
#: and ``freeze="stem"`` fixes. inception_resnet_v2: ``features.stem`` (Lu et al.'s
#: ``StemEnd``: the convolutions up to the 512-channel concatenation); xin2019 and gap_cnn:
#: the first conv block ``features.block1`` (Conv3d, BatchNorm3d, ReLU, pooling): the only
#: layer that sees the voxels, the one Kan et al.'s first-layer statistics read.
STEMS = {
    "inception_resnet_v2": "features.stem",
    "xin2019": "features.block1",
    "gap_cnn": "features.block1",
}
#: The task-specific output layer of every registered architecture.
OUTPUT_LAYER = "classifier.fc"
_COUNTER = "num_batches_tracked"


def stem_prefix(model_name: str) -> str:
    """The module name of an architecture's stem (see :data:`STEMS`).

    Raises
    ------
    ConfigError
        If the architecture has no stem definition.
    """
    if model_name not in STEMS:
        raise ConfigError(
            f"model {model_name!r} has no stem definition, so transfer='stem' / freeze='stem' "
            f"cannot be used with it; stems are defined for {', '.join(sorted(STEMS))}. Use "
            "--transfer all and --freeze none."
        )
    return STEMS[model_name]


def load_state_dict_file(path: str | os.PathLike) -> OrderedDict:
    """Read a bare PyTorch state_dict (``torch.save(model.state_dict(), path)``).

    Uses ``torch.load(path, weights_only=True, map_location="cpu")``. A dict holding the
    state_dict under ``"state_dict"`` (a common wrapper) is accepted too.

    Returns
    -------
    collections.OrderedDict
        ``{name: tensor}`` in the file's order.

    Raises
    ------
    ConfigError
        If the file is missing, unreadable, pickles Python objects or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"state_dict file {path} does not exist; check the path.")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise ConfigError(
            f"{path} holds Python objects besides tensors (e.g. a whole pickled model); "
            "brainmaps loads only weights, for safety. Re-save it with "
            "torch.save(model.state_dict(), path) where it was made."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{path} cannot be read as a PyTorch file ({type(exc).__name__}); it is corrupt, "
            "truncated or not a torch.save file."
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    tensors = isinstance(payload, dict) and payload
    if not tensors or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in tensors.items()
    ):
        found = type(payload).__name__
        raise ConfigError(
            f"{path} is not a state_dict: expected a mapping of parameter names to tensors, "
            f"found a {found}. Save it with torch.save(model.state_dict(), path)."
        )
    return OrderedDict(payload)


def match_by_order(source: dict, target: dict, *, where: str) -> dict[str, str]:
    """Pair the tensors of two state_dicts by position (BatchNorm counters set aside).

    Parameters
    ----------
    source, target : dict
        ``{name: tensor}`` (any objects with ``.shape``), in their modules' order.
    where : str
        Names the source in the messages.

    Returns
    -------
    dict
        ``{target_name: source_name}`` for every target tensor; BatchNorm
        ``num_batches_tracked`` counters are paired only where both sides have one.

    Raises
    ------
    ConfigError
        If the counts differ, or naming the first pair whose shapes differ.
    """
    src = [k for k in source if not k.endswith(_COUNTER)]
    tgt = [k for k in target if not k.endswith(_COUNTER)]
    if len(src) != len(tgt):
        raise ConfigError(
            f"{where}: its names do not match the model's and it has {len(src)} tensors "
            f"(BatchNorm counters aside) where the model has {len(tgt)}, so they cannot be "
            "paired by order either; check --model and its options (e.g. channels)."
        )
    for s, t in zip(src, tgt, strict=True):
        if tuple(source[s].shape) != tuple(target[t].shape):
            raise ConfigError(
                f"{where}: paired by order, its tensor {s!r} has shape "
                f"{tuple(source[s].shape)} but the model's {t!r} has {tuple(target[t].shape)}; "
                "check --model, --grid, --classes and the model options."
            )
    pairs = dict(zip(tgt, src, strict=True))
    for t in target:
        if t.endswith(_COUNTER):
            partner = pairs.get(t.removesuffix(_COUNTER) + "running_var", "")
            counter = partner.removesuffix("running_var") + _COUNTER
            if partner and counter in source:
                pairs[t] = counter
    return pairs


class FrozenBatchNorm(nn.Module):
    """A BatchNorm fixed to the statistics and shift it was given (eval-mode normalisation).

    Replaces a ``BatchNorm3d`` (or :class:`~brainmaps.models.inception_resnet_v2.
    BatchNormNoScale`) of a frozen stem for training: its tensors are buffers under the
    same names and in the same order (the state_dict is that of the original model), and
    it is not a ``_BatchNorm``, so neither ``model.train()`` nor the precise-BN
    recalibration (:func:`torch.optim.swa_utils.update_bn` resets every ``_BatchNorm``)
    changes it: the stem normalises with the source's running statistics, as a Keras
    layer with ``trainable=False`` does.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = float(bn.eps)
        for name, value in bn.state_dict().items():
            self.register_buffer(name, value.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise with the stored running statistics (never updated)."""
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            getattr(self, "weight", None),
            getattr(self, "bias", None),
            training=False,
            momentum=0.0,
            eps=self.eps,
        )


def freeze_module(model: nn.Module, prefix: str) -> int:
    """Freeze the submodule ``prefix`` of ``model`` in place for training.

    Its parameters get ``requires_grad=False`` and its BatchNorm layers become
    :class:`FrozenBatchNorm`; ``model.state_dict()`` keeps its keys, so the trained
    weights load into a fresh model.

    Returns
    -------
    int
        The number of frozen tensors (parameters and BatchNorm tensors).
    """
    module = model.get_submodule(prefix)
    count = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            parent_name, _, leaf = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, leaf, FrozenBatchNorm(child))
    for tensor in module.parameters():
        tensor.requires_grad_(False)
    count = len(module.state_dict())
    return count
