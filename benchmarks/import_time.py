"""Import time of the brainmaps subpackages, and whether they load torch.

Runs ``python -X importtime -c "import <module>"`` in a fresh interpreter for each
module, ``--repeat`` times, and reports the median cumulative import time of the module
itself (the ``cumulative`` column of ``-X importtime``, in seconds), the wall-clock
seconds of the whole interpreter, and whether ``torch``, ``SimpleITK``, ``sklearn`` or
``matplotlib`` ended up in ``sys.modules``. A module written ``NAME:*`` is imported with
``from NAME import *`` (every lazily exported name loaded; the time is then the sum over
the top-level imports). ``brainmaps.analysis``,
``brainmaps.baselines`` and ``brainmaps.evaluation`` must not load torch, and
``brainmaps.analysis`` should import in well under half a second (tests check the torch
part only: timings depend on the machine and its load).

Usage::

    python benchmarks/import_time.py [--repeat 5] [MODULE ...]

Prints a Markdown table (paste it into the README or a change note).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

DEFAULT_MODULES = (
    "brainmaps",
    "brainmaps.evaluation",
    "brainmaps.analysis",
    "brainmaps.baselines",
    "brainmaps.data",
    "brainmaps.training",
    "brainmaps.evaluation:*",
    "brainmaps.analysis:*",
    "brainmaps.baselines:*",
)
HEAVY = ("torch", "SimpleITK", "sklearn", "matplotlib")

_PROBE = (
    "import sys; {statement}; "
    "print(','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)"
)


def measure(module: str) -> tuple[float, float, str]:
    """Import ``module`` in a fresh interpreter.

    Returns
    -------
    cumulative : float
        Cumulative import time of ``module`` in seconds, as reported by ``-X importtime``.
    wall : float
        Wall-clock seconds of the whole interpreter run.
    heavy : str
        The heavy modules found in ``sys.modules`` afterwards, comma-separated.
    """
    name, star = module.removesuffix(":*"), module.endswith(":*")
    statement = f"from {name} import *" if star else f"import {name}"
    code = _PROBE.format(statement=statement, heavy=HEAVY)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    wall = time.perf_counter() - start
    if "ModuleNotFoundError" in proc.stderr and f"'{name}'" in proc.stderr:
        return float("nan"), wall, "(module absent)"
    if proc.returncode != 0:
        raise RuntimeError(f"importing {module} failed:\n{proc.stderr[-2000:]}")
    lines = proc.stderr.strip().splitlines()
    cumulative = 0.0 if star else float("nan")
    for line in lines:
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        seconds = int(parts[1]) / 1e6
        if star and not parts[2][1:].startswith(" "):  # a top-level import
            cumulative += seconds
        elif not star and parts[2].strip() == name:
            cumulative = seconds
    return cumulative, wall, lines[-1] if lines and "|" not in lines[-1] else ""


def main(argv: list[str] | None = None) -> None:
    """Measure every module and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT_MODULES))
    parser.add_argument("--repeat", type=int, default=5, help="runs per module (median)")
    args = parser.parse_args(argv)
    measure("brainmaps")  # warm the file-system cache
    print("| module | import (s, median) | interpreter wall (s) | heavy modules loaded |")
    print("|---|---:|---:|---|")
    for module in args.modules:
        runs = [measure(module) for _ in range(max(1, args.repeat))]
        cumulative = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"| {module} | {cumulative:.3f} | {wall:.3f} | {runs[-1][2] or '-'} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n1-minute load average: {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
