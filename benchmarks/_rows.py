"""Helpers shared by the benchmarks that measure each table row in a fresh process.

``python benchmarks/<script>.py`` puts this folder on ``sys.path``, so the scripts import it
as ``_rows``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys

import torch

__all__ = ["ROW_TAG", "device_name", "memory_now", "memory_peak", "run_row", "sync"]

#: Prefix of the line a ``--row`` child prints its JSON result on.
ROW_TAG = "ROW "


def maxrss_mib() -> float:
    """Peak RSS of this process in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024**2 if sys.platform == "darwin" else 1024)


def rss_mib() -> float:
    """Current RSS in MiB (``/proc/self/statm``; the peak where that is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**2
    except (OSError, ValueError, IndexError):
        return maxrss_mib()


def memory_now(dev: torch.device) -> float:
    """Memory in use now (MiB): CUDA allocated, else the process RSS."""
    if dev.type == "cuda":
        return torch.cuda.memory_allocated(dev) / 1024**2
    return rss_mib()


def memory_peak(dev: torch.device) -> float:
    """Peak memory (MiB): CUDA max allocated, else the peak RSS."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 1024**2
    return maxrss_mib()


def sync(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so timings are of finished work."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_name(dev: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU model and core count."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(s.split(":", 1)[1].strip() for s in f if s.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({name}, {os.cpu_count()} cores)"


def run_row(script: str, spec: dict) -> dict:
    """Run ``script --row SPEC`` in a fresh interpreter; ``{"error": ...}`` if it fails."""
    cmd = [sys.executable, os.path.abspath(script), "--row", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(ROW_TAG):
            return json.loads(line[len(ROW_TAG) :])
    lines = [s for s in proc.stderr.strip().splitlines() if s.strip()]
    return {"error": lines[-1][:200] if lines else f"exit status {proc.returncode}"}
