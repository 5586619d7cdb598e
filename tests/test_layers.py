"""The layer arrows of DESIGN.md: every ``brainmaps`` import points strictly downward.

Every module under ``src/brainmaps`` is parsed (never imported, so this is fast) and each
of its imports of ``brainmaps.*`` is collected: absolute and relative, at module level,
inside functions and under ``if TYPE_CHECKING:``, plus ``importlib.import_module`` calls
with a literal name. Each top-level package (or module) of brainmaps has a layer; an
import must go to a lower layer or stay within its own package. Two different packages
of one layer may not import each other (``training -> analysis`` is a departure).

Layers, top to bottom::

    L6  cli, demo, serve
    L5  reports
    L4  steps
    L3  training, attribution, baselines, analysis, probes
    L2  run, models, evaluation, data
    L1  tasks, validation, utils, the package root (``brainmaps/__init__.py``)
        exceptions (the floor of L1: every layer, L1 included, may raise its errors)

Inside L2, ``run`` sits above ``data`` (the run folder opens the volume cache and the
preprocessing configuration). Inside L6, ``cli`` sits on top (DESIGN.md:
``cli -> {serve, reports}``): each command parses its arguments and calls one public
function, e.g. of ``demo`` or ``serve``.
Inside L1, ``tasks`` may use ``validation`` and ``utils``, and everything may use
``exceptions``; the package root only exposes ``__version__`` and the exceptions.
Packages that do not exist (yet) are simply absent; a package that exists but has no
layer fails the test, so a new package must be given one here.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "brainmaps"
ROOT = "<root>"  # brainmaps/__init__.py

#: Layer of every top-level package or module of brainmaps (higher imports lower).
#: L6, L2 and L1 are ordered inside (see the module docstring): cli over demo and serve;
#: run over data; exceptions (1.0) under utils and validation (1.1), under tasks (1.2),
#: under the package root.
LAYERS: dict[str, float] = {
    "cli": 6.5,
    "demo": 6,
    "serve": 6,
    "reports": 5,
    "steps": 4,
    "training": 3,
    "attribution": 3,
    "baselines": 3,
    "analysis": 3,
    "probes": 3,
    "run": 2.5,  # the run folder reads the volume cache and preprocessing config of data
    "models": 2,
    "evaluation": 2,
    "data": 2,
    ROOT: 1.3,
    "tasks": 1.2,
    "validation": 1.1,
    "utils": 1.1,
    "exceptions": 1.0,
}

#: Imports that break the layers today, as (importing module, imported package) pairs.
#: This list must only shrink: the test also fails when an entry no longer occurs, so
#: fix a departure, then delete its entry. Never add one to make the test pass.
KNOWN_DEPARTURES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _component(dotted: str) -> str:
    """Top-level part of brainmaps a dotted ``brainmaps...`` name belongs to."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def _exists(dotted: str) -> bool:
    base = SRC.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted ``brainmaps`` names one AST node imports (empty for other nodes)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".")
            package = package if is_package else package[:-1]
            base = package[: len(package) - node.level + 1]
            stem = ".".join([*base, *([node.module] if node.module else [])])
        else:
            stem = node.module or ""
        # "from brainmaps import x" / "from . import x": x may be a submodule
        return [f"{stem}.{a.name}" if _exists(f"{stem}.{a.name}") else stem for a in node.names]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _nodes(tree: ast.Module, source: str):
    """Every statement of a module, nested ones included (imports are statements), and
    every call when the source mentions ``import_module``; cheaper than ``ast.walk``."""
    if "import_module" in source:
        yield from ast.walk(tree)
        return
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(getattr(node, field, ()))


@functools.cache
def collect_imports() -> dict[str, frozenset[str]]:
    """Importing module -> the brainmaps components it imports (its own excluded)."""
    graph: dict[str, frozenset[str]] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        module = _module_name(path)
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        own = _component(module)
        found = set()
        for node in _nodes(tree, source):
            for target in _targets(node, module, path.name == "__init__.py"):
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    if _component(target) != own:
                        found.add(_component(target))
        graph[module] = frozenset(found)
    return graph


def departures(graph: dict[str, frozenset[str]]) -> set[tuple[str, str]]:
    """The (module, imported component) pairs that do not point strictly downward."""
    return {
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if not LAYERS[target] < LAYERS[_component(module)]
    }


def test_every_package_has_a_layer():
    graph = collect_imports()
    present = {_component(m) for m in graph} | {t for ts in graph.values() for t in ts}
    missing = sorted(present - set(LAYERS))
    assert not missing, (
        f"brainmaps package(s) {missing} have no layer; add each to LAYERS in "
        "tests/test_layers.py at the layer DESIGN.md gives it."
    )


def test_imports_point_down_the_layers():
    graph = collect_imports()
    assert graph, f"no modules found under {SRC / PACKAGE}"
    found = departures(graph)
    new = sorted(found - KNOWN_DEPARTURES)
    assert not new, (
        "these imports point sideways or up the layers of DESIGN.md (module -> package): "
        + "; ".join(f"{m} -> {t} (L{LAYERS[_component(m)]} -> L{LAYERS[t]})" for m, t in new)
        + ". Move the shared code down a layer, or the caller up (e.g. into steps/)."
    )


def test_known_departures_only_shrink():
    stale = sorted(KNOWN_DEPARTURES - departures(collect_imports()))
    assert not stale, (
        f"KNOWN_DEPARTURES lists {stale}, which no longer occur; delete them from "
        "tests/test_layers.py so the list keeps shrinking."
    )


def test_relative_and_function_level_imports_are_seen():
    # the collector itself: a relative import two levels up and an import in a function
    code = "def f():\n    from ..analysis import overlap\n    from . import io\n"
    tree = ast.parse(code)
    found = {t for node in ast.walk(tree) for t in _targets(node, "brainmaps.data.cohort", False)}
    assert found == {"brainmaps.analysis.overlap", "brainmaps.data.io"}
