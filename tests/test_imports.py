"""Torch-free layers and lazy package exports (PEP 562).

``brainmaps.analysis``, ``brainmaps.baselines`` and ``brainmaps.evaluation`` work on maps
and tables from any tool, so neither importing them nor using every name they export may
load torch. Timings are not asserted here (they depend on the machine and its load):
``benchmarks/import_time.py`` measures them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "brainmaps"

#: Packages that must never load torch, on import or when every export is used.
TORCH_FREE = ("brainmaps.analysis", "brainmaps.baselines", "brainmaps.evaluation")
#: Packages whose ``__init__`` exports names lazily (PEP 562 ``__getattr__``).
LAZY = ("analysis", "baselines", "data", "evaluation", "training")

_PROBE = """
import json, sys
import {module}
on_import = sorted(m for m in ("torch", "SimpleITK") if m in sys.modules)
from {module} import *
print(json.dumps({{"on_import": on_import, "on_use": "torch" in sys.modules}}))
"""


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_packages_load_no_torch(module):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["on_import"] == [], f"import {module} loaded {found['on_import']}"
    assert not found["on_use"], f"using every name of {module} (import *) loaded torch"


def _type_checking_imports(tree: ast.Module) -> dict[str, set[str]]:
    """Module -> names of the ``if TYPE_CHECKING:`` block of a package ``__init__``."""
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom), ast.dump(imp)
                found.setdefault(imp.module, set()).update(a.name for a in imp.names)
    return found


@pytest.mark.parametrize("package", LAZY)
def test_lazy_exports_agree_with_all_and_type_checking(package):
    module = importlib.import_module(f"brainmaps.{package}")
    lazy = {
        importlib.util.resolve_name(sub, module.__name__): set(names)
        for sub, names in module._SUBMODULES.items()
    }
    exported = {n for names in lazy.values() for n in names}
    assert sorted(module.__all__) == sorted(exported), "__all__ and _SUBMODULES differ"
    assert len(module.__all__) == len(set(module.__all__))
    tree = ast.parse((SRC / package / "__init__.py").read_text())
    assert _type_checking_imports(tree) == lazy, "TYPE_CHECKING imports and _SUBMODULES differ"
    assert set(module.__all__) <= set(dir(module))


@pytest.mark.parametrize("package", LAZY)
def test_lazy_exports_resolve_to_the_defining_module(package):
    module = importlib.import_module(f"brainmaps.{package}")
    for sub, names in module._SUBMODULES.items():
        defining = importlib.import_module(sub, module.__name__)
        for name in names:
            assert getattr(module, name) is getattr(defining, name), f"{package}.{name}"
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = module.no_such_name
