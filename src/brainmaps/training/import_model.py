"""Turn a bare state_dict trained elsewhere into a run folder that ``predict`` accepts.

The run folder is minimal and honest: ``config.yaml`` (the model, the grid and the
preprocessing that ``brainmaps predict`` applies to new scans), ``cohort.tsv`` and
``folds.tsv`` with their columns but no rows (no cohort was trained here), and
``fold-0/model.pt``, the one "fold", whose metadata records the imported file, its
SHA-256 and how its tensors were matched. There are no predictions or metrics; the
steps that need a cohort refuse such a run with a clear message.

Kan et al.'s published xin2019 checkpoint names its layers ``hidden1.0`` (Conv3d),
``hidden1.1`` (BatchNorm3d), ..., ``hidden3.*`` and ``linear.*`` (class 1 = male): its
names differ from brainmaps' (``features.block1.conv``, ...) but its tensors come in the
same order with the same shapes, so they are matched by order. It was trained on raw HCP
T1 intensities resized to 58 x 70 x 58 by array shape: no registration, no resampling
through the affines, no brain mask, no z-scoring. ``brainmaps predict`` resamples new
scans through their affines onto the MNI grid of ``config.yaml`` and normalises them as it
says (z-score by default; ``--normalization none`` keeps raw intensities, closer to what
that model saw), so the inputs, and the probabilities, are not those of Kan et al.'s
pipeline: check such a model on labelled scans before trusting it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from brainmaps import __version__
from brainmaps.data.channels import channel_names
from brainmaps.data.preprocess import PreprocessConfig
from brainmaps.exceptions import ConfigError
from brainmaps.models import create_model
from brainmaps.models.checkpoints import save_checkpoint
from brainmaps.models.state_dicts import load_state_dict_file, match_by_order
from brainmaps.run.config import DataConfig, ModelConfig, RunConfig
from brainmaps.run.layout import RunLayout
from brainmaps.utils import write_tsv

__all__ = ["import_model", "match_state_dict"]

_COHORT_COLUMNS = ["subject", "session", "path", "label", "y", "site", "cache_slot", "test_fold"]
_FOLDS_COLUMNS = ["fold", "subject", "session", "role"]


def match_state_dict(state: dict, target: dict, *, where: str) -> tuple[dict[str, str], str]:
    """Pair every tensor of ``target`` with one of ``state``: by name, else by order.

    Parameters
    ----------
    state : dict
        The imported ``{name: tensor}``.
    target : dict
        The model's ``state_dict()``.
    where : str
        Names the imported file in the messages.

    Returns
    -------
    pairs : dict
        ``{target_name: source_name}``; a BatchNorm ``num_batches_tracked`` the file lacks
        keeps the model's value.
    matched_by : {"name", "order"}

    Raises
    ------
    ConfigError
        Naming the first tensor whose shape differs, or that one side lacks.
    """
    counter = "num_batches_tracked"
    names = [k for k in target if not k.endswith(counter)]
    if all(k in state for k in names):
        extra = [k for k in state if k not in target]
        if extra:
            raise ConfigError(
                f"{where}: tensor {extra[0]!r} ({len(extra)} in all) has no place in the "
                "model; check --model and its options."
            )
        for k in names:
            if tuple(state[k].shape) != tuple(target[k].shape):
                raise ConfigError(
                    f"{where}: tensor {k!r} has shape {tuple(state[k].shape)} but the model "
                    f"expects {tuple(target[k].shape)}; check --grid, --classes and the model "
                    "options."
                )
        return {k: k for k in target if k in state}, "name"
    return match_by_order(state, target, where=where), "order"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_model(
    file: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str,
    preprocess: PreprocessConfig,
    classes: tuple[str, ...] | None,
    target: str = "label",
    options: dict | None = None,
    suffix: str = "T1w",
    path_col: str | None = None,
) -> Path:
    """Write a run folder around a state_dict of a registered architecture.

    Parameters
    ----------
    file : str or os.PathLike
        ``torch.save(model.state_dict(), file)`` (read with ``weights_only=True``).
    out : str or os.PathLike
        The run folder to create (it must not hold a run yet).
    model : str
        A registered architecture (``brainmaps.models.list_models()``).
    preprocess : PreprocessConfig
        The grid and preprocessing ``brainmaps predict`` applies to new scans.
    classes : tuple of str or None
        Class names in output order (``("F", "M")``: output 1 is ``M``); ``None`` for a
        regression model (one output).
    target : str
        Name of what the model predicts (``"sex"``), recorded in ``config.yaml``.
    options : dict, optional
        Constructor options of the architecture (e.g. ``{"channels": [32, 64, 128]}``).
    suffix, path_col : str
        The input channels, as in :class:`~brainmaps.run.config.DataConfig`.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ConfigError
        An unreadable file, tensors that do not fit the model (the first one named), or
        an ``out`` that already holds a run.
    """
    file, layout = Path(file).absolute(), RunLayout(out)
    if layout.config.exists():
        raise ConfigError(f"--out {layout.root} already holds a run; choose a new --out.")
    if classes is not None and len(classes) < 2:
        raise ConfigError(f"--classes must name at least 2 classes, got {list(classes)}.")
    task = "regression" if classes is None else "classification"
    data = DataConfig(str(file), target, path_col=path_col, suffix=suffix, task=task)
    config = RunConfig(
        data=data,
        preprocess=preprocess,
        model=ModelConfig(model, dict(options or {})),
        out=str(layout.root.absolute()),
    )
    model_config = {
        "in_channels": max(len(channel_names(path_col, suffix)), 1),
        "n_classes": 1 if classes is None else len(classes),
        "input_shape": list(preprocess.grid_shape),
        **config.model.options,
    }
    network = create_model(model, **model_config)
    state = load_state_dict_file(file)
    target_state = network.state_dict()
    pairs, matched_by = match_state_dict(state, target_state, where=f"state_dict {file}")
    network.load_state_dict({**target_state, **{t: state[s] for t, s in pairs.items()}})
    grid = preprocess.grid
    meta = {
        "brainmaps_version": __version__,
        "model": model,
        "model_config": network.config,
        "task": task,
        "target": target,
        "classes": list(classes or ()),
        "grid_shape": list(grid.shape),
        "grid_affine": grid.affine.tolist(),
        "preprocess": preprocess.to_dict(),
        "fold": 0,
        "imported": {
            "file": str(file),
            "sha256": _sha256(file),
            "matched_by": matched_by,
            "n_tensors": len(pairs),
        },
    }
    save_checkpoint(layout.checkpoint(0), network, meta)
    write_tsv(pd.DataFrame(columns=_COHORT_COLUMNS), layout.cohort)
    write_tsv(pd.DataFrame(columns=_FOLDS_COLUMNS), layout.folds)
    config.to_yaml(layout.config)  # last: a folder with config.yaml is a finished import
    return layout.root
