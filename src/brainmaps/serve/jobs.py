"""A bounded job queue: uploads wait their turn; a full queue is refused, not buffered.

Jobs run in a small thread pool off the web server's event loop (PyTorch and ITK
release the GIL in their kernels). At most ``workers`` jobs run at once and at most
``max_queued`` wait; :meth:`JobManager.reserve` is called *before* an upload's body is
read, so a full server answers 503 at once instead of receiving a file it cannot take.
Each job has a private folder with server-made names; the uploaded scans are deleted
when the job ends, its outputs (maps, the scan on the model grid) when the retention
time has passed.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainmaps.exceptions import BrainmapsError, ConfigError

__all__ = ["Job", "JobManager", "QueueFull"]

LOG = logging.getLogger("brainmaps.serve")


class QueueFull(Exception):
    """Every worker is busy and the queue is full; retry after :attr:`retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    """One upload (one scan, or the scans of one zip) and its results."""

    id: str
    folder: Path
    space: str = "auto"
    status: str = "receiving"  # receiving | queued | running | done | failed
    stage: str = "receiving"
    progress: float = 0.0
    scans: list = field(default_factory=list)
    results: list[dict] = field(default_factory=list)
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def ended(self) -> bool:
        """bool : Whether the job is done or failed."""
        return self.status in ("done", "failed")

    def public(self) -> dict[str, Any]:
        """The status the API returns (no server paths)."""
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "progress": round(self.progress, 3),
            "scans": [s.name for s in self.scans],
            "n_done": len(self.results),
            "error": self.error,
            "created": self.created,
            "finished": self.finished,
        }


class JobManager:
    """Run uploads through an :class:`~brainmaps.serve.engine.Engine`, a few at a time.

    Parameters
    ----------
    engine : Engine
    root : pathlib.Path
        A private folder (mode 0700) that holds one sub-folder per job.
    workers : int
        Jobs run at once.
    max_queued : int
        Jobs waiting beyond those running; more uploads get :class:`QueueFull`.
    retention_s : float
        Seconds a finished job's results stay available; then its folder is deleted.
    """

    def __init__(
        self,
        engine,
        root: Path,
        *,
        workers: int = 1,
        max_queued: int = 4,
        retention_s: float = 3600.0,
    ) -> None:
        for name, value, low in (("workers", workers, 1), ("max_queued", max_queued, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not retention_s > 0:
            raise ConfigError(f"retention_s must be positive, got {retention_s!r}.")
        self.engine = engine
        self.root = Path(root)
        self.workers = workers
        self.max_queued = max_queued
        self.retention_s = float(retention_s)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brainmaps-job")
        self._seconds_per_job = 10.0

    # -- admission -----------------------------------------------------------------------
    def active(self) -> int:
        """Jobs receiving, queued or running."""
        with self._lock:
            return sum(not j.ended for j in self._jobs.values())

    def reserve(self, space: str = "auto") -> Job:
        """A new job in state ``receiving``, or :class:`QueueFull`.

        Raises
        ------
        QueueFull
            ``workers + max_queued`` jobs are already receiving, queued or running.
        """
        self.purge()
        with self._lock:
            active = sum(not j.ended for j in self._jobs.values())
            if active >= self.workers + self.max_queued:
                waves = 1 + (active - self.workers) // self.workers
                raise QueueFull(max(1, round(waves * self._seconds_per_job)))
            job_id = secrets.token_hex(16)
            folder = self.root / job_id
            folder.mkdir(mode=0o700)
            job = Job(id=job_id, folder=folder, space=space)
            self._jobs[job_id] = job
            return job

    def submit(self, job: Job, scans: list) -> None:
        """Queue a received job with its checked scans (re-read by the worker, so a
        waiting job holds files on disk, not voxels in memory)."""
        job.scans = scans
        job.status, job.stage = "queued", "queued"
        self._pool.submit(self._run, job)

    def discard(self, job: Job) -> None:
        """Forget a job whose upload was refused, and delete its folder."""
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)

    # -- lookup and clean-up -------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job with this id, if it exists and has not expired."""
        self.purge()
        with self._lock:
            return self._jobs.get(job_id)

    def purge(self, now: float | None = None) -> int:
        """Delete the jobs finished more than ``retention_s`` ago; return how many."""
        now = time.time() if now is None else now
        with self._lock:
            old = [
                j
                for j in self._jobs.values()
                if j.ended and j.finished is not None and now - j.finished > self.retention_s
            ]
            for job in old:
                del self._jobs[job.id]
        for job in old:
            shutil.rmtree(job.folder, ignore_errors=True)
        return len(old)

    def shutdown(self) -> None:
        """Stop taking jobs, wait for the running ones, delete every job folder."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the work ------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        job.status = "running"
        start = time.perf_counter()
        n = len(job.scans)
        try:
            for i, scan in enumerate(job.scans):

                def progress(stage: str, fraction: float, i: int = i) -> None:
                    job.stage = stage if n == 1 else f"{stage} ({i + 1}/{n})"
                    job.progress = (i + fraction) / n

                try:
                    result = self.engine.process(
                        scan.path, scan.name, job.folder, space=job.space, progress=progress
                    )
                except BrainmapsError as exc:
                    result = {"name": scan.name, "error": str(exc)}
                job.results.append(result)
            errors = [r["error"] for r in job.results if "error" in r]
            if len(errors) == n:
                job.error = errors[0] if n == 1 else f"no scan could be used: {errors[0]}"
                job.status = "failed"
            else:
                job.status = "done"
        except Exception:  # a bug: keep the server up, say so, log the traceback
            LOG.exception("job %s failed", job.id)
            job.error = "internal error while processing the upload; see the server log."
            job.status = "failed"
        finally:
            for scan in job.scans:
                Path(scan.path).unlink(missing_ok=True)
            job.stage = job.status
            job.progress = 1.0
            job.finished = time.time()
            elapsed = time.perf_counter() - start
            self._seconds_per_job = 0.7 * self._seconds_per_job + 0.3 * elapsed
