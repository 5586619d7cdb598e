"""A memory-mapped store of preprocessed volumes.

Each preprocessing configuration has its own folder
``<cache_dir>/<hash of the config>/`` holding

``volumes.f32``
    raw ``float32`` of shape ``(capacity, X, Y, Z)``, one slot per source file, grown
    with :func:`os.truncate` when new files arrive;
``manifest.json``
    ``{"slots": {file_key: slot}, "paths": {file_key: path}, "config": ...,
    "grid_shape": ...}``, written atomically after the slots it lists.

A file's key hashes its absolute path, size and modification time, so a file that
changes gets a new slot while unchanged files are never preprocessed again. Workers
write their volume straight into their slot of the memory map, so peak memory does not
grow with the number of scans.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from brainmaps.data.preprocess import PreprocessConfig, preprocess_img
from brainmaps.exceptions import BrainmapsError, ConfigError, ImageError
from brainmaps.utils import atomic_write_text, stable_hash

__all__ = [
    "CACHE_VERSION",
    "CachedVolumes",
    "cache_folder",
    "cache_volumes",
    "file_key",
    "resolve_cache_dir",
]

#: Bumped whenever preprocessing changes in a way that invalidates cached volumes.
CACHE_VERSION = "brainmaps-cache-1"
_VOLUMES = "volumes.f32"
_MANIFEST = "manifest.json"
_SAVE_EVERY = 32  # manifest checkpoint interval (completed files)


class CachedVolumes:
    """Read-only view of cached volumes, in the order they were requested.

    Parameters
    ----------
    path : str or os.PathLike
        The ``volumes.f32`` file.
    slots : sequence of int
        Slot of each volume in the file.
    grid_shape : tuple of int
        Shape ``(X, Y, Z)`` of one volume.

    Notes
    -----
    Pickling stores only the path, the slots and the shape; the memory map is reopened
    lazily in each process, so PyTorch ``DataLoader`` workers can share the view.
    """

    def __init__(
        self, path: str | os.PathLike, slots: Sequence[int], grid_shape: tuple[int, ...]
    ) -> None:
        self.path = Path(path)
        self._slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        self._slots.setflags(write=False)
        self._grid_shape = tuple(int(n) for n in grid_shape)
        self._capacity_checked = False

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """tuple of int : Shape of one volume."""
        return self._grid_shape

    @property
    def shape(self) -> tuple[int, ...]:
        """tuple of int : ``(N, X, Y, Z)``."""
        return (len(self), *self._grid_shape)

    @property
    def slots(self) -> np.ndarray:
        """numpy.ndarray of int64 : Slot of each volume in ``volumes.f32`` (read-only)."""
        return self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def _check_capacity(self) -> None:
        voxels = int(np.prod(self._grid_shape))
        capacity = os.path.getsize(self.path) // (4 * voxels)
        if capacity <= int(self._slots.max(initial=-1)):
            raise ImageError(
                f"cache file {self.path} holds {capacity} volumes but slot "
                f"{int(self._slots.max())} is needed; the cache was modified or deleted, run "
                "cache_volumes again."
            )
        self._capacity_checked = True

    def __getitem__(self, index: int) -> np.ndarray:
        """Return a copy of volume ``index`` as a ``float32`` array of ``grid_shape``."""
        if not isinstance(index, int | np.integer):
            raise TypeError(f"CachedVolumes indices must be integers, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"volume index {index} out of range for {len(self)} volumes")
        if not self._capacity_checked:
            self._check_capacity()
        # Map only this volume's bytes and unmap them once copied: a memmap of the whole
        # file kept open would count every page read so far in the resident set, so peak
        # memory would grow with the number of subjects seen in an epoch.
        nbytes = 4 * int(np.prod(self._grid_shape))
        offset = int(self._slots[index]) * nbytes
        view = np.memmap(
            self.path, dtype=np.float32, mode="r", offset=offset, shape=self._grid_shape
        )
        volume = np.array(view, dtype=np.float32)
        del view
        return volume

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict:
        return {"path": self.path, "slots": self._slots, "grid_shape": self._grid_shape}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["slots"], state["grid_shape"])

    def __repr__(self) -> str:
        return f"CachedVolumes({len(self)} volumes of {self._grid_shape}, {self.path})"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cache root: ``cache_dir`` if given, else ``$BRAINMAPS_CACHE_DIR``, else
    ``~/.cache/brainmaps``.

    Parameters
    ----------
    cache_dir : str, os.PathLike or None
        A folder chosen by the user (``~`` is expanded).

    Returns
    -------
    pathlib.Path
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("BRAINMAPS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "brainmaps"


def file_key(path: str | os.PathLike) -> str:
    """Hash a file's absolute path, size and modification time (ns).

    Raises
    ------
    ImageError
        If the file does not exist.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ImageError(
            f"image file {path} cannot be cached: {exc.strerror}; check the path."
        ) from None
    return stable_hash([path, stat.st_size, stat.st_mtime_ns])


def cache_folder(config: PreprocessConfig, cache_dir: str | os.PathLike) -> Path:
    """Return the folder of ``cache_dir`` that holds volumes preprocessed with ``config``."""
    return Path(cache_dir) / stable_hash({"config": config.to_dict(), "version": CACHE_VERSION})


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``folder/.lock``."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_manifest(folder: Path, config: PreprocessConfig) -> dict:
    """Return the manifest's ``slots`` and ``paths`` if valid, else an empty one."""
    empty = {"slots": {}, "paths": {}}
    try:
        manifest = json.loads((folder / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    if manifest.get("config") != config.to_dict() or manifest.get("version") != CACHE_VERSION:
        return empty
    voxels = int(np.prod(config.grid_shape))
    size = os.path.getsize(folder / _VOLUMES) if (folder / _VOLUMES).exists() else 0
    slots = manifest.get("slots", {})
    if slots and max(slots.values()) >= size // (4 * voxels):
        return empty  # the volume file was truncated or replaced behind our back
    return {"slots": dict(slots), "paths": dict(manifest.get("paths", {}))}


def _write_manifest(folder: Path, config: PreprocessConfig, state: dict) -> None:
    manifest = {
        "version": CACHE_VERSION,
        "config": config.to_dict(),
        "grid_shape": list(config.grid_shape),
        "slots": state["slots"],
        "paths": state["paths"],
    }
    atomic_write_text(folder / _MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def _grow(volumes: Path, n_slots: int, grid_shape: tuple[int, ...]) -> None:
    """Make ``volumes`` large enough for ``n_slots`` volumes (never shrinks it)."""
    needed = n_slots * int(np.prod(grid_shape)) * 4
    volumes.touch()
    if os.path.getsize(volumes) < needed:
        os.truncate(volumes, needed)


def _preprocess_into(path: str, slot: int, volumes: str, config: PreprocessConfig):
    """Worker: preprocess one file into its slot. Returns the error instead of raising."""
    try:
        data = preprocess_img(path, config)
    except BrainmapsError as exc:
        return slot, exc
    shape = tuple(config.grid_shape)
    offset = slot * data.nbytes
    out = np.memmap(volumes, dtype=np.float32, mode="r+", offset=offset, shape=shape)
    out[...] = data
    out.flush()
    del out
    return slot, None


def _run_jobs(todo, folder, config, state, n_jobs, progress) -> list[BrainmapsError]:
    """Preprocess ``todo`` ({key: (path, slot)}), recording finished slots in ``state``."""
    volumes = str(folder / _VOLUMES)
    by_slot = {slot: (key, path) for key, (path, slot) in todo.items()}
    jobs = (delayed(_preprocess_into)(p, s, volumes, config) for p, s in todo.values())
    errors: list[tuple[int, BrainmapsError]] = []
    bar = tqdm(total=len(todo), desc="preprocessing", unit="scan", disable=not progress)
    try:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for done, (slot, error) in enumerate(results, start=1):
            key, path = by_slot[slot]
            if error is None:
                state["slots"][key], state["paths"][key] = slot, path
            else:
                errors.append((slot, error))
            bar.update()
            if done % _SAVE_EVERY == 0:
                _write_manifest(folder, config, state)
    finally:
        bar.close()
        _write_manifest(folder, config, state)
    return [error for _, error in sorted(errors, key=lambda item: item[0])]


def cache_volumes(
    paths: Sequence[str | os.PathLike],
    config: PreprocessConfig,
    cache_dir: str | os.PathLike,
    *,
    n_jobs: int = 1,
    progress: bool = True,
) -> CachedVolumes:
    """Preprocess images once and return them as a memory-mapped view.

    Files already cached with the same configuration (same path, size and modification
    time) are not preprocessed again; changed files and new files are. The cache
    folder is locked while it is built, so concurrent runs wait for each other.

    Parameters
    ----------
    paths : sequence of path-like
        NIfTI files, in the order wanted for the returned volumes.
    config : PreprocessConfig
        How to preprocess (see :func:`~brainmaps.data.preprocess.preprocess_img`).
    cache_dir : path-like
        Root cache folder; volumes go to ``cache_folder(config, cache_dir)``.
    n_jobs : int
        Parallel worker processes (joblib; ``-1`` uses all cores).
    progress : bool
        Show a progress bar.

    Returns
    -------
    CachedVolumes
        ``volumes[i]`` is the preprocessed ``paths[i]``.

    Raises
    ------
    ImageError
        If an image is missing or invalid. The volumes finished before (and after) it
        stay cached, so a re-run only redoes the failed files.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"n_jobs must be a non-zero integer (-1 = all cores), got {n_jobs!r}.")
    paths = [os.path.abspath(os.fspath(p)) for p in paths]
    keys = [file_key(p) for p in paths]
    folder = cache_folder(config, cache_dir)
    with _locked(folder):
        state = _read_manifest(folder, config)
        next_slot = max(state["slots"].values(), default=-1) + 1
        todo: dict[str, tuple[str, int]] = {}
        for key, path in zip(keys, paths, strict=True):
            if key not in state["slots"] and key not in todo:
                todo[key] = (path, next_slot + len(todo))
        _grow(folder / _VOLUMES, next_slot + len(todo), config.grid_shape)
        errors = _run_jobs(todo, folder, config, state, n_jobs, progress) if todo else []
    if errors:
        others = f" ({len(errors) - 1} other file(s) failed too)" if len(errors) > 1 else ""
        raise type(errors[0])(f"{errors[0]}{others}")
    return CachedVolumes(folder / _VOLUMES, [state["slots"][k] for k in keys], config.grid_shape)
