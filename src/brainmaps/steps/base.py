"""What an analysis step is, and the registry the report and ``analyse_run`` iterate.

A :class:`Step` is described once: its name and command, the table it writes, the files
whose change makes that table stale, whether it applies to a run, how to compute it and
which of its options define the result (recorded in ``stages/<name>.yaml``). Adding an
analysis is one module that builds a :class:`Step` and calls :func:`register_step` (plus
its section in :mod:`brainmaps.reports.sections`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainmaps.analysis.maps import list_map_methods
from brainmaps.exceptions import ConfigError
from brainmaps.run.folder import RunFolder
from brainmaps.run.stages import write_stage

__all__ = [
    "Step",
    "get_step",
    "list_steps",
    "map_manifests",
    "record_stage",
    "register_step",
    "run_step",
]


def map_manifests(run: RunFolder) -> list[Path]:
    """The ``maps.tsv`` of every method: the default inputs of a map analysis."""
    return [run.layout.maps_manifest(m) for m in list_map_methods(run)]


def needs_maps(run: RunFolder, methods: Sequence[str], options: dict) -> str | None:
    """Skip reason of a step that analyses maps when there are none."""
    if not methods:
        return f"no maps; run 'brainmaps explain {run.path}' first"
    return None


@dataclass(frozen=True)
class Step:
    """One analysis of a run folder.

    Parameters
    ----------
    name : str
        Registry name (``analyse_run(steps=[...])``, ``brainmaps report --steps``).
    command : str
        The command that runs it alone (shown in the report when it is missing).
    output : callable
        ``output(run, options) -> Path``: the table it writes.
    compute : callable
        ``compute(run, methods, options) -> Path``: writes the table, returns its path.
    skip : callable
        ``skip(run, methods, options) -> str | None``: why it does not apply, or None.
    inputs : callable
        ``inputs(run) -> list of Path``: a table older than these is stale.
    order : int
        Where the step runs (and its table appears) among the steps: lower first.
    """

    name: str
    command: str
    output: Callable[[RunFolder, dict], Path]
    compute: Callable[[RunFolder, list[str], dict], Path]
    skip: Callable[[RunFolder, list[str], dict], str | None] = needs_maps
    inputs: Callable[[RunFolder], list[Path]] = map_manifests
    order: int = 100

    def run(self, run: RunFolder, methods: Sequence[str], options: dict) -> Path:
        """Compute the step (its function records the options that made its table)."""
        return self.compute(run, list(methods), options)


def record_stage(run: RunFolder, name: str, /, **options: Any) -> None:
    """Write ``stages/<stage>.yaml``: the options that made a step's outputs.

    Call it from a step's function after its table is written, with the options that
    define the result (not device, batch size or progress).
    """
    write_stage(run.layout.stage_record(name), name, options)


_REGISTRY: dict[str, Step] = {}


def register_step(step: Step) -> Step:
    """Add ``step`` to the registry (in order: the report and analyse_run follow it)."""
    if step.name in _REGISTRY and _REGISTRY[step.name] is not step:
        raise ValueError(f"a step named {step.name!r} is already registered.")
    _REGISTRY[step.name] = step
    return step


def list_steps() -> list[str]:
    """Names of the registered analysis steps, in the order they run."""
    return [s.name for s in sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))]


def get_step(name: str) -> Step:
    """The step registered under ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown analysis step {name!r}; choose from {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]


def run_step(name: str, run: RunFolder, methods: Sequence[str] | None = None, **options):
    """Run one registered step on a run folder (every map method by default)."""
    step = get_step(name)
    methods = list(methods) if methods else list_map_methods(run)
    return step.run(run, methods, options)
