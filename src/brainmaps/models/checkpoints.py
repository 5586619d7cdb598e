"""Model checkpoints: a state_dict plus plain metadata, safe to load with weights_only=True.

A checkpoint is ``{"state_dict": ..., "metadata": ...}`` written by :func:`torch.save`.
It never pickles Python objects, so :func:`torch.load` reads it with
``weights_only=True`` (no code runs on load). The metadata names the registered model
and its constructor arguments, so :func:`model_from_checkpoint` rebuilds the network.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.models.registry import create_model
from brainmaps.utils import atomic_path

__all__ = ["load_checkpoint", "model_from_checkpoint", "plain_metadata", "save_checkpoint"]

_KEYS = ("state_dict", "metadata")


def plain_metadata(value: Any, where: str = "metadata") -> Any:
    """Convert metadata to types that ``torch.load(weights_only=True)`` accepts.

    Tuples become lists, NumPy scalars and arrays become Python numbers and lists, and
    paths become strings. Dictionary keys must be strings.

    Parameters
    ----------
    value : object
        Nested dicts, lists, tuples, str, int, float, bool, None, NumPy values, paths.
    where : str
        Name of ``value`` used in error messages.

    Returns
    -------
    object
        The same structure made of dict, list, str, int, float, bool and None.

    Raises
    ------
    ConfigError
        Naming the key path and type of a value that cannot be stored.
    """
    if isinstance(value, np.generic):  # before int/float: np.float64 subclasses float
        return plain_metadata(value.item(), where)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.ndarray):
        return plain_metadata(value.tolist(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [plain_metadata(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(
                f"{where} has non-string key(s) {bad[:5]}; checkpoint metadata keys must be str."
            )
        return {k: plain_metadata(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise ConfigError(
        f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot hold; "
        "store dicts, lists, str, int, float, bool or None (e.g. call .tolist() or str())."
    )


def _cpu_state_dict(model_or_state_dict: nn.Module | dict) -> OrderedDict:
    if isinstance(model_or_state_dict, nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        state = model_or_state_dict
    else:
        raise ConfigError(
            "save_checkpoint expects a torch.nn.Module or a state_dict, got "
            f"{type(model_or_state_dict).__name__}."
        )
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ConfigError(
            f"state_dict entries {bad[:5]} are not str -> tensor; pass model.state_dict()."
        )
    return OrderedDict((k, v.detach().cpu()) for k, v in state.items())


def save_checkpoint(
    path: str | os.PathLike, model_or_state_dict: nn.Module | dict, metadata: dict
) -> Path:
    """Write a model's weights and metadata atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination (e.g. ``fold-0/model.pt``); its folder is created.
    model_or_state_dict : torch.nn.Module or dict
        The model, or its ``state_dict``; tensors are moved to the CPU.
    metadata : dict
        Plain data describing the model. Include ``"model"`` (registered name) and
        ``"model_config"`` (constructor arguments) for :func:`model_from_checkpoint`.
        It is converted with :func:`plain_metadata`.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ConfigError
        If the metadata holds a value a weights_only checkpoint cannot store.
    """
    if not isinstance(metadata, dict):
        raise ConfigError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}.")
    payload = {
        "state_dict": _cpu_state_dict(model_or_state_dict),
        "metadata": plain_metadata(metadata),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as exc:  # torch reports a short write as "unexpected pos"
            if "unexpected pos" not in str(exc) and "write failed" not in str(exc):
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[OrderedDict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Uses ``torch.load(path, weights_only=True, map_location="cpu")``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    state_dict : collections.OrderedDict
        CPU tensors.
    metadata : dict

    Raises
    ------
    ConfigError
        If the file is missing, corrupt or truncated, or is not a brainmaps checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"checkpoint {path} does not exist; give the model.pt of a trained fold "
            "(runs/<name>/fold-<k>/model.pt)."
        )
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not a pickled object: a corrupt file
            raise _unreadable(path, exc) from None
        raise _unsafe(path, exc) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
    ) as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(payload, dict) or any(k not in payload for k in _KEYS):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(
            f"checkpoint {path} is not a brainmaps checkpoint: expected keys {list(_KEYS)}, "
            f"found {found}. Save models with brainmaps.training.save_checkpoint."
        )
    return payload["state_dict"], payload["metadata"]


def _unreadable(path: Path, exc: BaseException) -> ConfigError:
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # keep torch's reason, not its loading advice
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    reason = " ".join(text.split())[:200]
    return ConfigError(
        f"checkpoint {path} cannot be read ({type(exc).__name__}: {reason}); "
        "the file is corrupt, truncated or not a PyTorch file. Re-train that fold "
        "(delete the file and resume the run)."
    )


def _unsafe(path: Path, exc: BaseException) -> ConfigError:
    """The file pickles Python objects; never quote torch's advice to unpickle them."""
    found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
    what = f" ({', '.join(found[:3])})" if found else ""
    return ConfigError(
        f"checkpoint {path} holds Python objects{what} besides tensors and plain metadata; "
        "brainmaps loads only weights, for safety (loading pickled objects can run "
        "arbitrary code). Re-save the model's weights with "
        "torch.save(model.state_dict(), path) (or brainmaps' save_checkpoint), or retrain."
    )


def model_from_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild a registered model from a checkpoint and load its weights.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    model : torch.nn.Module
        On the CPU, in eval mode.
    metadata : dict

    Raises
    ------
    ConfigError
        If the checkpoint cannot be read, lacks ``model``/``model_config`` metadata, or
        its weights do not fit the rebuilt model.
    """
    state, meta = load_checkpoint(path)
    if not isinstance(meta, dict) or "model" not in meta or "model_config" not in meta:
        raise ConfigError(
            f"checkpoint {path} has no 'model' and 'model_config' metadata, so the network "
            "cannot be rebuilt; save it with metadata={'model': name, 'model_config': {...}}."
        )
    try:
        model = create_model(meta["model"], **meta["model_config"])
        model.load_state_dict(state, strict=True)
    except BrainmapsError as exc:
        raise ConfigError(f"checkpoint {path}: cannot rebuild the model: {exc}") from None
    except RuntimeError as exc:
        raise ConfigError(
            f"checkpoint {path}: the weights do not fit model {meta['model']!r} built with "
            f"{meta['model_config']}: {str(exc)[:300]}"
        ) from None
    return model.eval(), meta
