"""Model-parameter randomisation: do a run's maps depend on what its models learnt?

The sanity check of Adebayo et al. (2018): for each fold model and a class-balanced
sample of its test subjects, every method's map is computed with the trained model, then
the layers with parameters are re-initialised one more at a time, from the output layer
down to the input (cascading randomisation), and the maps are computed again. A map that
explains the model must move away from the original as its weights are destroyed; one
that stays the same (an edge detector of the input would) explains the input, not the
model. The scores (Spearman of absolute and signed values, SSIM, inside the brain mask)
and the pass / fail rule are in :mod:`brainmaps.analysis.sanity`.

The data randomisation test of the same paper (``data_randomisation=True``, opt-in
because it trains) is in :mod:`brainmaps.steps._sanity_data`.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from brainmaps.analysis.maps import list_map_methods, run_brain_mask
from brainmaps.analysis.sanity import (
    DATA_CHECK,
    LABELS_PERMUTED,
    MODEL_CHECK,
    SPEARMAN_BOUND,
    compare_maps,
    sanity_summary,
)
from brainmaps.attribution.base import (
    check_options,
    create_method,
    get_method,
    list_methods,
)
from brainmaps.attribution.cohort import explained_units, resolve_targets
from brainmaps.exceptions import BrainmapsWarning, ConfigError
from brainmaps.models.checkpoints import model_from_checkpoint
from brainmaps.models.device import resolve_device
from brainmaps.models.predict import VolumeDataset
from brainmaps.run.folder import RunFolder, open_run
from brainmaps.run.stages import read_stage
from brainmaps.steps._sanity_data import DATA_FOLDS, data_options, permuted_labels, permuted_model
from brainmaps.steps.base import Step, needs_maps, record_stage, register_step
from brainmaps.utils import write_tsv
from brainmaps.validation import check_float, check_int

__all__ = [
    "COLUMNS",
    "DATA_FOLDS",
    "SLOW_METHODS",
    "cascading_randomisation",
    "permuted_labels",
    "randomisation_scores",
    "randomisation_stages",
    "sanity_run",
]

#: Methods checked only when asked for by name (each map costs minutes per stage).
SLOW_METHODS = ("occlusion", "meaningful_perturbation")
#: Subjects per fold of :func:`sanity_run` (the check costs one map per method and stage).
SUBJECTS_PER_FOLD = 2
#: Subjects per fold when ``brainmaps report`` / ``analyse_run`` runs the step. The demo's
#: six gradient-type methods on its 5 folds of 36x44x36 volumes (5 stages of xin2019)
#: took 5 x 21 s with 1 subject per fold and 5 x 34 s with 2, on two busy CPU cores.
REPORT_SUBJECTS_PER_FOLD = 1

Explain = Callable[[nn.Module, torch.Tensor], np.ndarray]


def _own_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


#: Normalisation layers: re-initialised with the layer before them (one stage), since
#: their ``reset_parameters()`` is not random (scale 1, shift 0, running mean 0, var 1).
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def randomisation_stages(model: nn.Module, x: torch.Tensor) -> list[tuple[str, ...]]:
    """The layers to randomise, grouped by stage, in the order the forward pass runs.

    A layer is a module with parameters of its own and a ``reset_parameters()``
    (convolution, linear, normalisation). Each stage is one layer with weights and the
    normalisation layers that follow it (Adebayo et al. randomise Inception-v3 block by
    block, each block with its batch normalisation). Modules with parameters but no way
    to re-initialise them stay trained, with a warning.

    Parameters
    ----------
    model : torch.nn.Module
    x : torch.Tensor
        An input ``(N, C, X, Y, Z)`` on the model's device (its first item is traced, in
        eval mode).

    Returns
    -------
    list of tuple of str
        Module names of each stage, input side first.
    """
    names = {m: n for n, m in model.named_modules() if _own_parameters(m)}
    called: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda m, i, o: called.append(m)) for m in names]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    order = list(dict.fromkeys(called))
    fixed = [names[m] for m in order if not callable(getattr(m, "reset_parameters", None))]
    if fixed:
        warnings.warn(
            f"layers {fixed} have parameters but no reset_parameters(); the sanity check "
            "leaves them trained.",
            BrainmapsWarning,
            stacklevel=2,
        )
    stages: list[list[str]] = []
    for m in order:
        if callable(getattr(m, "reset_parameters", None)):
            if isinstance(m, _NORMS) and stages:
                stages[-1].append(names[m])
            else:
                stages.append([names[m]])
    return [tuple(s) for s in stages]


def cascading_randomisation(
    model: nn.Module, stages: Sequence[str | Sequence[str]], random_state=0
):
    """Yield ``(stage, layers, model)``: the last ``stage`` stages re-initialised.

    Stage 1 re-initialises the last entry of ``stages`` (the output layer), stage 2 also
    the one before it, down to the first. Each layer is reset by its own
    ``reset_parameters()`` (PyTorch's default initialisation; BatchNorm also forgets its
    running statistics) on a CPU copy, under a seed drawn from ``random_state`` and the
    stage, so the random weights do not depend on the device or on the global RNG.
    ``model`` is left as it was; the yielded model is a copy on its device.

    Parameters
    ----------
    model : torch.nn.Module
    stages : sequence of str or of sequences of str
        Module names in forward order, one name or a group per stage
        (:func:`randomisation_stages`).
    random_state : int or sequence of int

    Yields
    ------
    stage : int
        How many stages are random.
    layers : tuple of str
        The modules re-initialised at this stage.
    model : torch.nn.Module
    """
    device = next(model.parameters()).device
    randomised = copy.deepcopy(model).cpu()
    modules = dict(randomised.named_modules())
    entropy = [int(v) for v in np.atleast_1d(random_state)]
    groups = [(g,) if isinstance(g, str) else tuple(g) for g in stages]
    for stage, group in enumerate(reversed(groups), start=1):
        seed = int(np.random.SeedSequence([*entropy, stage]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in group:
                modules[name].reset_parameters()
        yield stage, group, copy.deepcopy(randomised).to(device)


def randomisation_scores(
    model: nn.Module,
    x: torch.Tensor,
    explain: Explain,
    *,
    mask: np.ndarray | None = None,
    stages: Sequence[str | Sequence[str]] | None = None,
    random_state=0,
    original: np.ndarray | None = None,
) -> pd.DataFrame:
    """Scores of the maps of each cascade stage against the trained model's maps.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model (not changed).
    x : torch.Tensor
        Inputs ``(N, C, X, Y, Z)`` on the model's device.
    explain : callable
        ``explain(model, x) -> (N, X, Y, Z)`` NumPy maps; it must explain the same
        output unit at every stage (fix the targets with the trained model).
    mask : numpy.ndarray, optional
        Brain voxels to compare (default: all).
    stages : sequence, optional
        Layers to randomise, in forward order, one name or a group of names per stage
        (default :func:`randomisation_stages`).
    random_state : int or sequence of int
        Seed of the random weights.
    original : numpy.ndarray, optional
        ``explain(model, x)``, when already computed.

    Returns
    -------
    pandas.DataFrame
        ``sample, stage, layer, spearman_abs, spearman, ssim, trained_constant``: one
        row per input and stage (``stage`` stages randomised, from the output down;
        ``layer`` names the modules added at that stage, joined by ``+``;
        ``trained_constant``: the trained model's map ranks no voxel, see
        :func:`brainmaps.analysis.sanity.compare_maps`).
    """
    stages = list(randomisation_stages(model, x) if stages is None else stages)
    if not stages:
        raise ConfigError(f"{type(model).__name__} has no layer with reset_parameters().")
    original = np.asarray(explain(model, x) if original is None else original)
    rows = []
    for stage, group, randomised in cascading_randomisation(model, stages, random_state):
        scores = compare_maps(original, np.asarray(explain(randomised, x)), mask)
        rows += [{"stage": stage, "layer": "+".join(group), **r} for r in scores]
    return pd.DataFrame(rows, columns=["sample", "stage", "layer", "spearman_abs", "spearman",
                                       "ssim", "trained_constant"])  # fmt: skip


def _sample(run: RunFolder, rows: np.ndarray, n: int, seed: Sequence[int]) -> np.ndarray:
    """Up to ``n`` of ``rows``: a seeded shuffle, then the classes taken in turn."""
    rows = np.random.default_rng(list(seed)).permutation(rows)
    if n >= len(rows) or not run.task.is_classification:
        return np.sort(rows[:n])
    labels = run.labels[rows]
    rank = np.zeros(len(rows), dtype=int)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(int((labels == c).sum()))
    return np.sort(rows[np.lexsort((labels, rank))[:n]])


def _methods(run: RunFolder, methods: Sequence[str] | None) -> list[str]:
    if methods:
        methods = list(dict.fromkeys(methods))
        for m in methods:
            get_method(m)  # an unknown name fails here, with the known ones
        return methods
    return _default_methods(list_map_methods(run))


def _settings(run: RunFolder, method: str) -> dict:
    """Target and options of the method's maps (``stages/explain-<m>.yaml``)."""
    path = run.layout.stage_record(f"explain-{method}")
    options = (read_stage(path) or {}).get("options") or {}
    opts = dict(options.get("options") or {})
    try:
        check_options(method, opts, run.grid.shape)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err} Explain the run again.") from None
    return {"target": options.get("target", "predicted"), "options": opts}


def _targets(run: RunFolder, model: nn.Module, x: torch.Tensor, rows, target) -> torch.Tensor:
    """The output unit each map explains, fixed with the trained model (as explain does)."""
    targets = resolve_targets(run, target, np.asarray(rows))
    with torch.no_grad():
        units = explained_units(run, model.eval(), x, targets)
    if units is None:  # regression: the one output
        return torch.zeros(len(rows), dtype=torch.long)
    return units.cpu().clone()


def _explainer(method: str, options: dict, targets: torch.Tensor, batch_size: int) -> Explain:
    def explain(model: nn.Module, x: torch.Tensor) -> np.ndarray:
        maps = []
        for s in range(0, len(x), batch_size):
            t = targets[s : s + batch_size].to(x.device)
            m = create_method(method, model, **options).attribute(x[s : s + batch_size], t)
            maps.append(m.float().cpu().numpy())
        return np.concatenate(maps)

    return explain


def sanity_run(
    run_dir: str | os.PathLike | RunFolder,
    methods: Sequence[str] | None = None,
    *,
    subjects_per_fold: int = SUBJECTS_PER_FOLD,
    random_state: int = 0,
    bound: float = SPEARMAN_BOUND,
    data_randomisation: bool = False,
    folds: Sequence[int] | None = None,
    epochs: int | None = None,
    device: str = "auto",
    batch_size: int = 4,
    progress: bool = True,
) -> Path:
    """Randomisation checks of every method (Adebayo et al. 2018).

    Cascading model-parameter randomisation, always: for each fold, a seeded
    class-balanced sample of its test subjects is explained by the fold model and by
    copies of it whose layers with parameters are re-initialised from the output down to
    the input, one more at each stage (:func:`cascading_randomisation`; the random
    weights are seeded by ``random_state`` and the fold, the same for every method).
    Data randomisation, when asked for: the model of each of ``folds`` is trained again
    on permuted training labels (see the module docstring) and explains the same
    subjects. Every map explains the output unit the method's maps explain (its recorded
    ``target``, resolved with the trained model), with the options recorded in
    ``stages/explain-<method>.yaml`` (defaults when there is no record), and is compared
    with the trained model's map inside the brain mask
    (:func:`brainmaps.analysis.sanity.compare_maps`).

    Rows of methods, checks and folds not computed by this call are kept when they were
    made on the same sample (``subjects_per_fold``, ``random_state``) with the same
    explain options; the others are dropped.

    Parameters
    ----------
    run_dir : str, os.PathLike or RunFolder
        A trained run folder.
    methods : sequence of str, optional
        Registered methods (default: those with maps in the run, except the slow
        :data:`SLOW_METHODS`, which are checked only when named).
    subjects_per_fold : int
        Test subjects per fold (classes taken in turn).
    random_state : int
        Seed of the sample, the random weights and the label permutation (the
        permuted-label models are trained with the fold models' own seed).
    bound : float
        Bound of the pass / fail rule (:func:`brainmaps.analysis.sanity.sanity_summary`).
    data_randomisation : bool
        Also run the data randomisation test (trains one model per fold of ``folds``;
        classification runs only).
    folds : sequence of int, optional
        Folds retrained on permuted labels (default :data:`DATA_FOLDS`, fold 0).
    epochs : int, optional
        Epochs of each permuted-label model (default: the run's).
    device : {"auto", "cpu", "cuda"}
    batch_size : int
        Subjects per call of a method.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        ``<run>/analysis/sanity.tsv`` (:data:`COLUMNS`): one row per method, subject and
        stage of the cascade (``check`` ``model``), and per method and subject of a
        retrained fold (``check`` ``data``, ``stage`` 0, ``layer`` ``labels permuted``,
        with the permuted-label model's ``epochs``, ``accuracy`` and
        ``balanced_accuracy`` on the fold's test subjects); ``sanity_summary.tsv``
        beside it holds the pass / fail line of each method
        (:data:`brainmaps.analysis.sanity.SUMMARY_COLUMNS`).

    Raises
    ------
    ConfigError
        On a bad parameter, e.g. ``epochs`` below 1, a fold the run does not have, or
        ``folds`` / ``epochs`` without ``data_randomisation``.
    """
    run = open_run(run_dir)
    methods = _methods(run, methods)
    if not methods:
        raise ConfigError(
            f"no method to check in {run.path}: run 'brainmaps explain' first, or name "
            f"methods (the slow {', '.join(SLOW_METHODS)} are checked only when named)."
        )
    subjects_per_fold = check_int("subjects_per_fold", subjects_per_fold, min=1)
    batch_size = check_int("batch_size", batch_size, min=1)
    random_state = check_int("random_state", random_state, min=0)
    bound = check_float("bound", bound, min=0.0, max=1.0)
    data = data_options(run, data_randomisation, folds, epochs)
    settings = {m: _settings(run, m) for m in methods}
    mask = np.asarray(run_brain_mask(run).dataobj) > 0
    volumes, checkpoints = run.volumes(progress=progress), run.fold_models()
    dev = resolve_device(device)
    bar = tqdm(total=run.n_folds * len(methods), desc="sanity", disable=not progress)
    tables = []
    for k in range(run.n_folds):
        rows = _sample(run, run.indices(k, "test"), subjects_per_fold, [random_state, k])
        model = model_from_checkpoint(checkpoints[k])[0].to(dev).eval()
        items = VolumeDataset(volumes, rows)
        x = torch.stack([items[j] for j in range(len(items))]).to(dev)
        stages = randomisation_stages(model, x)
        permuted = None
        if data and k in data["folds"]:
            permuted, score = permuted_model(run, k, volumes, data["epochs"], random_state,
                                              device, progress)  # fmt: skip
            permuted = permuted.to(dev).eval()
        for m in methods:
            targets = _targets(run, model, x, rows, settings[m]["target"])
            explain = _explainer(m, settings[m]["options"], targets, batch_size)
            original = np.asarray(explain(model, x))
            scores = randomisation_scores(
                model, x, explain, mask=mask, stages=stages, random_state=[random_state, k],
                original=original,
            )  # fmt: skip
            tables.append(_describe(run, scores.assign(check=MODEL_CHECK), m, k, rows, targets))
            if permuted is not None:
                scores = pd.DataFrame(compare_maps(original, explain(permuted, x), mask))
                scores = scores.assign(check=DATA_CHECK, stage=0, layer=LABELS_PERMUTED,
                                       epochs=data["epochs"], accuracy=score["accuracy"],
                                       balanced_accuracy=score["balanced_accuracy"])  # fmt: skip
                tables.append(_describe(run, scores, m, k, rows, targets))
            bar.update(1)
    bar.close()
    table = pd.concat(tables, ignore_index=True)
    return _write(
        run, table, bound, methods=methods, subjects_per_fold=subjects_per_fold,
        random_state=random_state, explain=settings, data_randomisation=data,
    )  # fmt: skip


#: The columns of ``analysis/sanity.tsv``.
COLUMNS = [
    "method", "fold", "subject", "session", "label", "explained", "check", "stage", "layer",
    "spearman_abs", "spearman", "ssim", "trained_constant", "epochs", "accuracy",
    "balanced_accuracy",
]  # fmt: skip


def _describe(run: RunFolder, scores: pd.DataFrame, method: str, fold: int, rows, targets):
    """Scores with the method, fold and subject columns in front, in :data:`COLUMNS`."""
    sample = scores.pop("sample").to_numpy()
    info = run.table.iloc[np.asarray(rows)[sample]]
    names = [run.classes[int(t)] for t in targets] if run.task.is_classification else None
    front = pd.DataFrame(
        {
            "method": method,
            "fold": fold,
            "subject": info["subject"].astype(str).to_numpy(),
            "session": info["session"].astype(str).to_numpy(),
            "label": info["label"].to_numpy(),
            "explained": [names[i] for i in sample] if names else "output",
        }
    )
    table = pd.concat([front, scores.reset_index(drop=True)], axis=1)
    return table.reindex(columns=COLUMNS)


def _kept_rows(run: RunFolder, table: pd.DataFrame, explain: dict, **sample) -> pd.DataFrame:
    """Rows checked earlier on the same sample that this call did not compute again.

    A check of some methods (or folds, or only the cascade) must not erase the other
    results; rows made with another sample (subjects per fold, seed) are not comparable,
    and rows of a method explained with other options than now are out of date: both
    are dropped. Tables from before the data randomisation test read as the cascade.
    """
    out = run.layout.analysis("sanity")
    record = read_stage(run.layout.stage_record("sanity")) or {}
    earlier = record.get("options") or {}
    if not out.is_file() or any(earlier.get(k) != v for k, v in sample.items()):
        return pd.DataFrame(columns=COLUMNS)
    old = pd.read_csv(out, sep="\t", dtype={"method": str, "subject": str, "session": str})
    old = old.reindex(columns=COLUMNS)
    old["check"] = old["check"].fillna(MODEL_CHECK)
    moved = [m for m, s in explain.items() if (earlier.get("explain") or {}).get(m) != s]
    new = set(zip(table["method"], table["check"], table["fold"], strict=True))
    keys = zip(old["method"], old["check"], old["fold"].astype(int), strict=True)
    keep = [key not in new and key[0] not in moved for key in keys]
    return old[keep]


def _write(run: RunFolder, table: pd.DataFrame, bound: float, **options) -> Path:
    out = run.layout.analysis("sanity")
    sample = {k: options[k] for k in ("subjects_per_fold", "random_state")}
    kept = _kept_rows(run, table, options["explain"], **sample)
    if len(kept):
        earlier = (read_stage(run.layout.stage_record("sanity")) or {}).get("options") or {}
        old = {m: s for m, s in (earlier.get("explain") or {}).items() if m in set(kept["method"])}
        options["explain"] = {**old, **options["explain"]}
        table = pd.concat([kept, table], ignore_index=True)
    options["methods"] = list(dict.fromkeys([*kept["method"], *options["methods"]]))
    data = table[table["check"] == DATA_CHECK]
    options["data_folds"] = sorted(int(f) for f in data["fold"].unique())
    write_tsv(table, out)
    write_tsv(sanity_summary(table, bound), run.layout.analysis("sanity_summary"))
    record_stage(run, "sanity", bound=bound, **options)
    return out


def _compute(run: RunFolder, methods: list[str], options: dict) -> Path:
    """The report's run: the cascade only, unless the options ask for the data test.

    With no ``sanity_subjects`` given and permuted-label rows on disk, the recorded
    sample is used again, so that re-running the cascade keeps those trained rows.
    """
    data = bool(options.get("sanity_data_randomisation", False))
    earlier = (read_stage(run.layout.stage_record("sanity")) or {}).get("options") or {}
    reuse = "sanity_subjects" not in options and earlier.get("data_folds")
    return sanity_run(
        run,
        _default_methods(methods),
        subjects_per_fold=options.get(
            "sanity_subjects",
            earlier.get("subjects_per_fold") if reuse else REPORT_SUBJECTS_PER_FOLD,
        ),
        random_state=earlier.get("random_state", 0) if reuse else 0,
        data_randomisation=data,
        folds=options.get("sanity_data_folds") if data else None,
        epochs=options.get("sanity_epochs") if data else None,
        device=options.get("device", "auto"),
        progress=options.get("progress", True),
    )


def _default_methods(methods: Sequence[str]) -> list[str]:
    """The methods the report's step checks: registered ones, the slow ones left out."""
    known = set(list_methods())
    return [m for m in methods if m in known and m not in SLOW_METHODS]


def _skip(run: RunFolder, methods: list[str], options: dict) -> str | None:
    reason = needs_maps(run, methods, options)
    if reason is None and not _default_methods(methods):
        return (
            f"only slow methods have maps; run 'brainmaps sanity {run.path} --methods "
            f"{','.join(methods)}' to check them"
        )
    return reason


STEP = register_step(
    Step(
        name="sanity",
        order=45,
        command="brainmaps sanity",
        output=lambda run, options: run.layout.analysis("sanity"),
        compute=_compute,
        skip=_skip,
    )
)
