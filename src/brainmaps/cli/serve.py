"""``brainmaps serve RUN``: a web page that predicts and explains uploaded scans.

The run's fold models are loaded once; uploads are queued and processed a few at a
time (:mod:`brainmaps.serve`). Binds to 127.0.0.1 unless ``--host`` says otherwise; the
server has no user accounts, so ``--host 0.0.0.0`` without ``--token`` prints a warning.
"""

from __future__ import annotations

import argparse
import sys

from brainmaps.cli.explain import parse_methods, parse_options
from brainmaps.exceptions import ConfigError

DEFAULT_METHODS = "hires_cam"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the sub-command."""
    p = sub.add_parser(
        "serve",
        help="a web page: upload a scan, get the ensemble's prediction and its map",
        description="Serve a run on a web page: upload a NIfTI scan (or a zip of scans), get "
        "the fold ensemble's prediction with its spread and an attribution map in a 3D "
        "viewer; a JSON API (OpenAPI at /docs) does the same for scripts.",
    )
    p.add_argument("run_dir", help="run folder written by 'brainmaps train' (one channel)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"attribution methods computed per scan, comma-separated, or 'none' "
        f"(default: {DEFAULT_METHODS})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="a method option, e.g. --set occlusion.window_mm=12 (repeatable)",
    )
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload (MB)")
    p.add_argument("--max-scans", type=int, default=10, help="most scans in one zip")
    p.add_argument("--workers", type=int, default=1, help="uploads processed at once")
    p.add_argument("--queue", type=int, default=4, help="uploads that may wait (then 503)")
    p.add_argument(
        "--retention-min",
        type=float,
        default=60.0,
        help="minutes a finished result stays downloadable before it is deleted",
    )
    p.add_argument(
        "--threshold",
        help="binary runs: call the second class when its probability is at least this: "
        "a value in (0, 1), or youden | sens=0.9 | spec=0.9, chosen once at start on the "
        "run's out-of-fold predictions (default: the most probable class)",
    )
    p.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' on the API (the page asks for it); also "
        "read from $BRAINMAPS_TOKEN",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``brainmaps serve``."""
    import os

    try:
        import uvicorn

        from brainmaps.serve.app import ServeSettings, create_app, viewer_bundled
        from brainmaps.serve.engine import Engine
        from brainmaps.serve.uploads import UploadLimits
    except ImportError as exc:
        raise ConfigError(
            f"'brainmaps serve' needs the server packages ({exc.name} is missing); install "
            "them with: pip install 'brainmaps[serve]' (make test / make demo do)."
        ) from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}.")
    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be positive, got {args.max_upload_mb}.")
    if not args.retention_min > 0:
        raise ConfigError(f"--retention-min must be positive, got {args.retention_min}.")
    methods = [] if args.methods.strip().lower() == "none" else parse_methods(args.methods)
    token = args.token or os.environ.get("BRAINMAPS_TOKEN") or None
    max_bytes = int(args.max_upload_mb * 2**20)
    settings = ServeSettings(
        max_upload_bytes=max_bytes,
        limits=UploadLimits(max_bytes=max_bytes, max_scans=args.max_scans),
        workers=args.workers,
        max_queued=args.queue,
        retention_s=args.retention_min * 60,
        token=token,
    )
    engine = Engine(
        args.run_dir,
        methods=methods,
        options=parse_options(args.set),
        device=args.device,
        threshold=args.threshold,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(
            f"brainmaps: warning: serving on {args.host} without --token: anyone who can "
            "reach this port can upload scans and use the model; there is no "
            "authentication. Use --token, or a reverse proxy with authentication and TLS.",
            file=sys.stderr,
        )
    if not viewer_bundled():
        print(
            "brainmaps: warning: the NiiVue viewer is not installed in the package's static "
            "files (run 'make venv', which runs npm); the page shows predictions without "
            "the 3D viewer.",
            file=sys.stderr,
        )
    app = create_app(engine, settings)
    described = engine.describe()
    print(
        f"serving run {described['run']} ({described['n_models']} fold models, "
        f"{described['task']}, maps: {', '.join(engine.methods) or 'none'}) on "
        f"http://{args.host}:{args.port}/  (Ctrl-C stops)"
    )
    try:
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            timeout_keep_alive=5,
            timeout_graceful_shutdown=10,
        )
    finally:  # also when the server never started (port in use): no job folder is left
        app.state.manager.shutdown()
    return 0
