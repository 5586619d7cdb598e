"""Transfer learning: start each fold from trained weights (Lu et al., BrainImageNet).

Lu et al. trained a 3D Inception-ResNet-v2 for sex on 85,721 scans, then initialised
their AD classifier from it (``code/Trans_ADNI_Dx_InceptionResNetV2*_wc1_mwc1.py``): the
whole network with a new output layer, or the stem only (up to ``StemEnd``) with a new,
smaller head (:class:`~brainmaps.models.inception_transfer_head.TransferHead`); nothing
was frozen in their final scripts (the freezing loops are commented out).

``training.init_from`` names the source: a run folder (fold k starts from its fold k),
``RUN/fold-<k>`` (every fold from that one), a fold checkpoint ``model.pt``, or a bare
state_dict file. ``training.transfer`` copies every matching tensor but the output layer
(``"all"``; the output layer too when the source predicts the same task and classes) or
the stem (``"stem"``, :data:`~brainmaps.models.state_dicts.STEMS`); tensors are matched
by name and shape (a bare state_dict whose names differ: by order and shape); any
selected tensor that does not fit refuses the source. ``training.freeze="stem"`` fixes the
stem (:func:`~brainmaps.models.state_dicts.freeze_module`).

Beyond the paper: their sex model was trained on all their data, the AD test subjects
included. Here each fold's test subjects are compared with the subjects the source fold
was trained or validated on; an overlap raises :class:`~brainmaps.DataLeakageError`
unless ``allow_overlap`` (a warning, and the counts are recorded in each fold's
checkpoint metadata under ``transfer``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from brainmaps.exceptions import BrainmapsWarning, ConfigError, DataLeakageError
from brainmaps.models.checkpoints import load_checkpoint
from brainmaps.models.state_dicts import (
    OUTPUT_LAYER,
    freeze_module,
    load_state_dict_file,
    match_by_order,
    stem_prefix,
)
from brainmaps.run.config import RunConfig
from brainmaps.run.folder import open_run
from brainmaps.run.layout import RunLayout

__all__ = [
    "TransferPlan",
    "TransferSource",
    "plan_transfer",
    "resolve_source",
    "with_transfer_head",
]

_FOLD = re.compile(r"^fold-(\d+)$")


@dataclass(frozen=True)
class TransferSource:
    """Where ``init_from`` points.

    Attributes
    ----------
    path : pathlib.Path
        ``init_from`` as given (absolute).
    kind : {"run", "fold", "state_dict"}
        A run folder, one fold of a run (``RUN/fold-<k>`` or its ``model.pt``, or a
        brainmaps checkpoint outside a run), or a bare state_dict file.
    run : pathlib.Path or None
        The source run folder, whose ``folds.tsv`` lists the subjects it was trained on.
    fold : int or None
        The source fold every target fold starts from (``None``: fold k from fold k).
    """

    path: Path
    kind: str
    run: Path | None = None
    fold: int | None = None

    def fold_for(self, k: int) -> int | None:
        """The source fold of target fold ``k`` (``None`` for a bare state_dict)."""
        return k if self.kind == "run" else self.fold

    def checkpoint(self, k: int) -> Path:
        """The file target fold ``k`` reads its weights from."""
        if self.kind == "run":
            return RunLayout(self.run).checkpoint(k)
        if self.path.is_dir():
            return self.path / RunLayout.CHECKPOINT
        return self.path

    def load(self, k: int) -> tuple[dict, dict | None]:
        """``(state_dict, metadata or None)`` for target fold ``k`` (weights_only=True)."""
        path = self.checkpoint(k)
        if self.kind == "state_dict":
            return load_state_dict_file(path), None
        if not path.is_file():
            raise ConfigError(
                f"training.init_from {self.path}: the source has no {path.parent.name}/"
                f"{path.name} for target fold {k}; the source run must have at least as many "
                "finished folds as this run (or give RUN/fold-<k> to start every fold from one)."
            )
        return load_checkpoint(path)


def resolve_source(init_from: str) -> TransferSource:
    """Classify ``init_from`` (a run, one fold, or a bare state_dict).

    Raises
    ------
    ConfigError
        If the path does not exist or is a folder that is no run nor fold of a run.
    """
    path = Path(init_from)
    if path.is_dir():
        if RunLayout(path).config.is_file():
            return TransferSource(path, "run", run=path)
        match = _FOLD.match(path.name)
        if match and RunLayout(path.parent).config.is_file():
            return TransferSource(path, "fold", run=path.parent, fold=int(match.group(1)))
        raise ConfigError(
            f"training.init_from {path} is a folder but neither a run folder (no "
            f"{RunLayout.CONFIG}) nor a fold of one (RUN/fold-<k>); give a run folder, "
            "RUN/fold-<k> or a .pt/.pth state_dict file."
        )
    if not path.is_file():
        raise ConfigError(
            f"training.init_from {path} does not exist; give a run folder, RUN/fold-<k> or a "
            ".pt/.pth state_dict file."
        )
    try:
        payload = torch.load(path, weights_only=True, map_location="meta")
    except Exception:  # unreadable: load_state_dict_file names the reason later
        payload = None
    if isinstance(payload, dict) and {"state_dict", "metadata"} <= set(payload):
        match = _FOLD.match(path.parent.name)
        run = path.parent.parent
        if match and RunLayout(run).config.is_file():
            return TransferSource(path, "fold", run=run, fold=int(match.group(1)))
        return TransferSource(path, "fold")
    return TransferSource(path, "state_dict")


def with_transfer_head(config: RunConfig) -> RunConfig:
    """``config`` with Lu et al.'s transfer head for ``transfer="stem"`` on inception_resnet_v2.

    The option is written into ``model.options`` (``head: transfer``), so ``config.yaml``
    shows the network that was trained; an explicit ``head`` is kept.
    """
    t, m = config.training, config.model
    if t.init_from and t.transfer == "stem" and m.name == "inception_resnet_v2":
        if "head" not in m.options:
            return config.replace(model=replace(m, options={**m.options, "head": "transfer"}))
    return config


def _subjects(values) -> set[str]:
    return {str(s).removeprefix("sub-") for s in values}


@dataclass
class TransferPlan:
    """The checked transfer of a run: source, per-fold overlaps, and how to apply it.

    Built by :func:`plan_transfer` before anything is written; :meth:`apply` then
    initialises (and freezes) each fold's model.
    """

    config: RunConfig
    source: TransferSource
    classes: tuple[str, ...]
    task: str
    model_config: dict
    overlaps: dict[int, int | None] = field(default_factory=dict)

    @property
    def _where(self) -> str:
        return f"training.init_from {self.source.path} (target run {self.config.out})"

    def _selected(self, target: dict, meta: dict | None) -> list[str]:
        t = self.config.training
        if t.transfer == "stem":
            prefix = stem_prefix(self.config.model.name) + "."
            return [k for k in target if k.startswith(prefix)]
        same_task = meta is not None and (
            meta.get("task") == self.task and tuple(meta.get("classes") or ()) == self.classes
        )
        head = OUTPUT_LAYER + "."
        return [k for k in target if same_task or not k.startswith(head)]

    def _check_meta(self, meta: dict, target_config: dict, k: int) -> None:
        name, source_config = meta.get("model"), meta.get("model_config") or {}
        where = f"{self._where}, fold {self.source.fold_for(k)}"
        if name != self.config.model.name:
            raise ConfigError(
                f"{where}: the source is a {name!r} model, this run trains "
                f"{self.config.model.name!r}; transfer needs the same architecture (--model)."
            )
        if source_config.get("in_channels") != target_config["in_channels"]:
            raise ConfigError(
                f"{where}: the source takes {source_config.get('in_channels')} input "
                f"channel(s), this run {target_config['in_channels']}; use the same channels."
            )
        grid = self.config.preprocess.grid
        same_grid = list(meta.get("grid_shape") or []) == list(grid.shape) and np.allclose(
            np.asarray(meta.get("grid_affine"), dtype=float), grid.affine, atol=1e-4
        )
        if not same_grid:
            raise ConfigError(
                f"{where}: the source was trained on grid {meta.get('grid_shape')} (affine "
                f"{meta.get('grid_affine')}), this run uses {list(grid.shape)}; its filters "
                "would see voxels of another size. Use the source's --grid and voxel size."
            )

    def pairs(self, state: dict, meta: dict | None, target: dict, k: int) -> dict[str, str]:
        """``{target_name: source_name}`` of the tensors to copy (all checked)."""
        if meta is not None:
            self._check_meta(meta, self.model_config, k)
            by_name = {key: key for key in target}
        elif all(key in state for key in self._selected(target, None)):
            by_name = {key: key for key in target if key in state}
        else:
            by_name = match_by_order(state, target, where=self._where)
        selected = self._selected(target, meta)
        bad = [
            key
            for key in selected
            if key not in by_name
            or by_name[key] not in state
            or tuple(state[by_name[key]].shape) != tuple(target[key].shape)
        ]
        if bad or not selected:
            key = bad[0] if bad else "(none)"
            found = (
                tuple(state[by_name[key]].shape)
                if key in by_name and by_name[key] in state
                else "absent"
            )
            raise ConfigError(
                f"{self._where}: {len(bad)} of the {len(selected)} tensor(s) to transfer "
                f"({self.config.training.transfer}) do not fit; first: {key!r} (model "
                f"{tuple(target[key].shape) if key in target else '-'}, source {found}). "
                "Use a source of the same architecture, options and grid."
            )
        return {key: by_name[key] for key in selected}

    def apply(self, model: nn.Module, k: int) -> dict:
        """Copy the source's weights into fold ``k``'s ``model`` (and freeze its stem).

        Returns
        -------
        dict
            The record stored in the fold checkpoint's metadata under ``transfer``.
        """
        state, meta = self.source.load(k)
        target = model.state_dict()
        pairs = self.pairs(state, meta, target, k)
        with torch.no_grad():
            for key, source_key in pairs.items():
                target[key].copy_(state[source_key])
        t = self.config.training
        frozen = (
            freeze_module(model, stem_prefix(self.config.model.name)) if t.freeze == "stem" else 0
        )
        return {
            "source": str(self.source.path),
            "source_run": str(self.source.run) if self.source.run else None,
            "source_fold": self.source.fold_for(k),
            "transfer": t.transfer,
            "freeze": t.freeze,
            "n_copied": len(pairs),
            "n_tensors": len(target),
            "n_frozen": frozen,
            "overlap": self.overlaps.get(k),
            "overlap_checked": self.overlaps.get(k) is not None,
        }


def _check_overlap(plan: TransferPlan, roles: pd.DataFrame) -> None:
    """Fill ``plan.overlaps``: source training subjects among each fold's test subjects."""
    source, t = plan.source, plan.config.training
    n_folds = int(roles["fold"].max()) + 1
    if source.run is None:
        warnings.warn(
            f"training.init_from {source.path} is not part of a run folder, so there is no "
            "list of the subjects it was trained on: whether this run's test subjects were "
            "among them cannot be checked; if they were, the test metrics are optimistic.",
            BrainmapsWarning,
            stacklevel=4,
        )
        plan.overlaps = {k: None for k in range(n_folds)}
        return
    folds = open_run(source.run).folds
    found = {}
    for k in range(n_folds):
        j = source.fold_for(k)
        seen = folds.loc[(folds["fold"] == j) & folds["role"].isin(["train", "val"]), "subject"]
        test = roles.loc[(roles["fold"] == k) & (roles["role"] == "test"), "subject"]
        found[k] = sorted(_subjects(seen) & _subjects(test))
    plan.overlaps = {k: len(v) for k, v in found.items()}
    hit = {k: v for k, v in found.items() if v}
    if not hit:
        return
    counts = ", ".join(f"fold {k}: {len(v)}" for k, v in hit.items())
    examples = ", ".join(next(iter(hit.values()))[:5])
    text = (
        f"training.init_from {source.path}: test subjects of this run ({plan.config.out}) "
        f"were training/validation subjects of the source ({counts}; e.g. {examples}), so "
        "the transferred weights have seen them"
    )
    if not t.allow_overlap:
        raise DataLeakageError(
            f"{text} and the test metrics would be optimistic. Test on the source's own folds "
            f"(--folds-file {source.run or 'SOURCE_RUN'}: each fold then starts from the "
            "source fold that never saw its test subjects), train the source without them, "
            "or pass --allow-overlap to accept it (warned and recorded in each fold's model.pt)."
        )
    warnings.warn(
        f"{text}; allowed (--allow-overlap): the test metrics are optimistic.",
        BrainmapsWarning,
        stacklevel=4,
    )


def plan_transfer(
    config: RunConfig, classes, task: str, roles: pd.DataFrame, model_config: dict
) -> TransferPlan | None:
    """Check a run's ``init_from`` before anything is written (``None`` without one).

    Resolves the source, checks the subject overlap of every fold and that the first
    fold's source weights fit a model built with ``model_config`` (on the meta device).

    Raises
    ------
    ConfigError
        An unknown, missing or incompatible source (other architecture, channels, grid,
        tensors that do not fit, no stem definition for ``transfer="stem"``).
    DataLeakageError
        Source training subjects among a fold's test subjects (without ``allow_overlap``).
    """
    t = config.training
    if not t.init_from:
        return None
    if t.transfer == "stem" or t.freeze == "stem":
        stem_prefix(config.model.name)
    from brainmaps.models import create_model

    source = resolve_source(t.init_from)
    plan = TransferPlan(config, source, tuple(classes), str(task), dict(model_config))
    _check_overlap(plan, roles)
    with torch.device("meta"):
        target = create_model(config.model.name, **model_config).state_dict()
    state, meta = plan.source.load(0)
    plan.pairs(state, meta, target, 0)
    return plan
