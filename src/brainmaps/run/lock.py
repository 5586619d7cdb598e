"""One writer per run folder: an advisory lock on ``<run>/.lock``.

The lock is an ``fcntl.flock`` on a file that also records the holder's process id and
start time, so a second writer gets a clear error naming the holder. The holder removes
the file when it is done; the operating system releases the lock when the holder exits,
even when it is killed, so a stale ``.lock`` file never blocks a later run. A writer that
locked a file which was removed meanwhile retries on the new one, so two writers never
hold locks on two different files.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from brainmaps.exceptions import ConfigError

__all__ = ["RunLockedError", "run_lock"]


class RunLockedError(ConfigError):
    """Another process is writing the same run folder."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return text or "another process"


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str = "this run") -> Iterator[Path]:
    """Hold the lock file ``path`` for the duration of the block.

    Parameters
    ----------
    path : str or os.PathLike
        The lock file (``RunLayout.lock``); its folder is created.
    what : str
        The command that writes, for the error message.

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    RunLockedError
        If another process holds the lock.
    """
    import fcntl

    path = Path(path)
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunLockedError(
                f"run folder {path.parent} is being written by {_holder(path)}; wait for it "
                f"to finish (or stop it) before running {what} there, or choose another "
                "--out."
            ) from None
        if _same_file(handle, path):
            break
        handle.close()  # the file was removed by its last holder: lock the new one
    try:
        handle.seek(0)
        handle.truncate()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} (since {stamp})\n")
        handle.flush()
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked, then release by closing
        handle.close()
        if created and not any(path.parent.iterdir()):
            path.parent.rmdir()  # a command that failed before writing leaves no folder


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
