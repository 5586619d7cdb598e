"""The web application of ``brainmaps serve``: a page, a JSON API and its OpenAPI schema.

Endpoints
---------
``GET /``                        the page (static files under ``/static``)
``GET /health``                  liveness, the model description, queue state
``POST /predict?space=auto``     multipart upload (field ``file``): one ``.nii``/``.nii.gz``
                                 or a ``.zip`` of such; answers ``202`` with the job id
``GET /jobs/{id}``               status, stage and progress
``GET /jobs/{id}/result``        the result (JSON, or TSV with ``?format=tsv``)
``GET /jobs/{id}/map.nii.gz``    one scan's map (``?scan=0&method=...``), on the model grid
``GET /jobs/{id}/scan.nii.gz``   the scan as the models saw it (``?scan=0``)

Every error is JSON ``{"error": message}`` with a 4xx status (413 too large, 415 wrong
type, 422 unusable scan, 503 busy with ``Retry-After``, 408 upload too slow); a bug
answers 500 with no traceback (it is logged). The body of an upload is read as a stream
and written to a server-made file in the job's private folder; the size limit is
enforced on the bytes received, before the rest is read.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from brainmaps.exceptions import BrainmapsError, ConfigError
from brainmaps.serve.engine import SPACES, Engine
from brainmaps.serve.jobs import JobManager, QueueFull
from brainmaps.serve.receive import receive_upload
from brainmaps.serve.uploads import UploadLimits, unpack_upload

__all__ = ["ServeSettings", "create_app", "static_dir", "viewer_bundled"]

LOG = logging.getLogger("brainmaps.serve")
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self' blob: data:; "
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def static_dir() -> Path:
    """The folder of the page's files (``index.html``, ``app.js``, ``vendor/``)."""
    return Path(str(resources.files("brainmaps.serve") / "static"))


def viewer_bundled() -> bool:
    """Whether the NiiVue bundle was installed into the static files (``make`` does)."""
    return (static_dir() / "vendor" / "niivue.umd.js").is_file()


@dataclass
class ServeSettings:
    """Limits and options of the server.

    Parameters
    ----------
    max_upload_bytes : int
        Largest request body accepted (checked while receiving).
    limits : UploadLimits
        Limits on a zip's members (count, uncompressed size).
    workers, max_queued : int
        Jobs run at once / waiting (see :class:`~brainmaps.serve.jobs.JobManager`).
    retention_s : float
        Seconds a finished job's results stay downloadable.
    token : str, optional
        When set, the API (not the page) requires ``Authorization: Bearer <token>``.
    idle_timeout_s : float
        An upload that sends nothing for this long is dropped (408).
    upload_timeout_s : float
        An upload that takes longer than this in all is dropped (408).
    min_rate_bytes_s : float
        After ``idle_timeout_s``, an upload averaging fewer bytes per second is dropped (408).
    root : pathlib.Path, optional
        Where job folders are made (default: a new private temporary folder).
    """

    max_upload_bytes: int = 200 * 2**20
    limits: UploadLimits = field(default_factory=UploadLimits)
    workers: int = 1
    max_queued: int = 4
    retention_s: float = 3600.0
    token: str | None = None
    idle_timeout_s: float = 30.0
    upload_timeout_s: float = 600.0
    min_rate_bytes_s: float = 16 * 1024
    root: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_upload_bytes, bool) or self.max_upload_bytes < 1:
            raise ConfigError(f"max_upload_bytes must be positive, got {self.max_upload_bytes!r}.")
        for name in ("idle_timeout_s", "upload_timeout_s", "min_rate_bytes_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}.")
        if self.token is not None and len(self.token) < 8:
            raise ConfigError("token must have at least 8 characters; use a random string.")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _job_or_404(manager: JobManager, job_id: str):
    job = manager.get(job_id) if _JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise HTTPException(404, f"no job {job_id[:40]!r} (unknown, or expired and deleted).")
    return job


def _result_or_error(job) -> list[dict]:
    if not job.ended:
        raise HTTPException(409, f"job {job.id} is not finished yet ({job.stage}).")
    if job.status == "failed":
        raise HTTPException(422, job.error or "the job failed.")
    return job.results


def _scan_result(job, scan: int) -> dict:
    results = _result_or_error(job)
    if not 0 <= scan < len(results):
        raise HTTPException(404, f"scan={scan}: the job has scans 0..{len(results) - 1}.")
    result = results[scan]
    if "error" in result:
        raise HTTPException(422, result["error"])
    return result


def _table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        row = {k: r.get(k) for k in ("name", "space", "template_correlation", "n_models")}
        for c, p in (r.get("probabilities") or {}).items():
            row[f"p_{c}"] = p
        for c, s in (r.get("spread") or {}).items():
            row[f"std_{c}"] = s
        for key in ("call", "prediction", "prediction_std", "error"):
            if key in r:
                row[key] = r[key]
        rows.append(row)
    return pd.DataFrame(rows)


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """Build the application around a loaded :class:`~brainmaps.serve.engine.Engine`.

    Parameters
    ----------
    engine : Engine
        The run's fold ensemble, loaded once.
    settings : ServeSettings, optional

    Returns
    -------
    fastapi.FastAPI
        Serve it with uvicorn (``brainmaps serve`` does). Its job folders are removed when
        the application shuts down.
    """
    settings = settings or ServeSettings()
    root = settings.root
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="brainmaps-serve-"))
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    manager = JobManager(
        engine,
        root,
        workers=settings.workers,
        max_queued=settings.max_queued,
        retention_s=settings.retention_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(manager.shutdown)

    app = FastAPI(
        title="brainmaps",
        summary="Predict uploaded brain MRI scans with a run's fold ensemble and map why.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.manager = manager
    app.state.engine = engine
    app.state.settings = settings

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        public = path in ("/", "/health", "/favicon.ico") or path.startswith("/static/")
        if settings.token and not public and not path.startswith(("/docs", "/openapi")):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
                return _error(
                    401,
                    "this server needs a token: send 'Authorization: Bearer <token>' (the "
                    "page asks for it).",
                    {"WWW-Authenticate": "Bearer"},
                )
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()]
        return _error(422, "; ".join(parts) or "invalid request.")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        LOG.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal error; the server log has the details.")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(static_dir() / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/health", summary="Liveness, the model and the queue")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.describe(),
            "auth": bool(settings.token),
            "viewer": viewer_bundled(),
            "active_jobs": manager.active(),
            "capacity": manager.workers + manager.max_queued,
            "max_upload_mb": round(settings.max_upload_bytes / 2**20, 1),
            "max_scans": settings.limits.max_scans,
            "spaces": list(SPACES),
        }

    @app.post("/predict", status_code=202, summary="Upload a scan (or a zip of scans)")
    async def predict(
        request: Request,
        space: str = Query(
            "auto", description="auto | mni (already registered) | native (register first)"
        ),
    ):
        if space not in SPACES:
            return _error(422, f"space must be one of {', '.join(SPACES)}, got {space[:40]!r}.")
        try:
            job = manager.reserve(space)
        except QueueFull as exc:
            return _error(
                503,
                f"the server is busy ({manager.active()} uploads in progress); retry in "
                f"{exc.retry_after} s.",
                {"Retry-After": str(exc.retry_after)},
            )
        try:
            received = job.folder / "upload.bin"
            filename = await receive_upload(
                request,
                received,
                settings.max_upload_bytes,
                idle_timeout_s=settings.idle_timeout_s,
                upload_timeout_s=settings.upload_timeout_s,
                min_rate_bytes_s=settings.min_rate_bytes_s,
            )
            scans = await run_in_threadpool(
                unpack_upload, received, filename, job.folder, settings.limits
            )
            for scan in scans:
                await run_in_threadpool(engine.validate, Path(scan.path), scan.name)
        except BrainmapsError as exc:
            manager.discard(job)
            return _error(getattr(exc, "status", 422), str(exc))
        except BaseException:
            manager.discard(job)
            raise
        finally:
            if job.folder.exists():
                (job.folder / "upload.bin").unlink(missing_ok=True)
        manager.submit(job, scans)
        return JSONResponse(
            {"id": job.id, "status": job.status, "scans": [s.name for s in scans]},
            status_code=202,
            headers={"Location": f"/jobs/{job.id}"},
        )

    @app.get("/jobs/{job_id}", summary="Status and progress of a job")
    async def status(job_id: str) -> dict[str, Any]:
        return _job_or_404(manager, job_id).public()

    @app.get("/jobs/{job_id}/result", summary="The result: JSON, or TSV with format=tsv")
    async def result(job_id: str, format: str = Query("json", pattern="^(json|tsv)$")):
        job = _job_or_404(manager, job_id)
        results = _result_or_error(job)
        if format == "tsv":
            text = _table(results).to_csv(sep="\t", index=False, float_format="%.6g")
            return PlainTextResponse(
                text,
                media_type="text/tab-separated-values",
                headers={"Content-Disposition": f'attachment; filename="{job.id}.tsv"'},
            )
        public = [{k: v for k, v in r.items() if k != "files"} for r in results]
        for item, r in zip(public, results, strict=True):
            if "files" in r:
                item["maps"] = [m for m in r["files"] if m != "scan"]
        return {"id": job.id, "model": engine.describe(), "results": public}

    @app.get("/jobs/{job_id}/map.nii.gz", summary="A scan's attribution map (NIfTI)")
    async def map_file(job_id: str, scan: int = Query(0, ge=0), method: str | None = None):
        job = _job_or_404(manager, job_id)
        r = _scan_result(job, scan)
        method = method or (engine.methods[0] if engine.methods else None)
        if method not in r["files"] or method == "scan":
            raise HTTPException(
                404, f"method={str(method)[:40]!r}: this server computes {list(engine.methods)}."
            )
        return _nifti(job, r["files"][method], f"{_stem(r['name'])}_{method}")

    @app.get("/jobs/{job_id}/scan.nii.gz", summary="A scan on the model grid (NIfTI)")
    async def scan_file(job_id: str, scan: int = Query(0, ge=0)):
        job = _job_or_404(manager, job_id)
        r = _scan_result(job, scan)
        return _nifti(job, r["files"]["scan"], f"{_stem(r['name'])}_mni")

    return app


def _nifti(job, filename: str, stem: str) -> FileResponse:
    """A job's output file; ``filename`` is one the engine made, never the client's."""
    path = job.folder / filename
    if not path.is_file():
        raise HTTPException(404, "the file has expired; upload the scan again.")
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100]
    return FileResponse(path, media_type="application/gzip", filename=f"{stem}.nii.gz")


def _stem(name: str) -> str:
    """A scan's upload name without its NIfTI suffix."""
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("brainmaps")
    except PackageNotFoundError:
        return "0"
