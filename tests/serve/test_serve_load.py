"""Load and slow-client checks of ``brainmaps serve`` against a real uvicorn server.

The server runs in a daemon thread of the test process on a loopback port chosen by the
OS, so its memory is this process's (``VmRSS`` in ``/proc/self/status``). Uploads are
sent with httpx from a pool of 5 client threads.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from brainmaps.serve.app import ServeSettings, create_app
from brainmaps.serve.engine import Engine
from brainmaps.training.ensembles import predict_run

#: Uploads of the load test, and how many are in flight at once.
N_UPLOADS = 20
CONCURRENT = 5
#: Bound on the growth of the process's resident memory over the 20 uploads, after a
#: warm-up upload. Measured on the 2-core dev machine (RSS ~740 MB after warm-up, 1 torch
#: thread): +9.5, +10.1 and +11.0 MB over 20 uploads (12 accepted jobs), +11.5 MB over 60
#: uploads (36 jobs); +1.1 MB with 2 torch threads. So a one-off cost (client and
#: thread-pool threads, allocator pools), not a cost per job. The bound leaves a wide
#: margin for other machines and allocators while still catching a leak of the uploaded
#: scans or of a model per job.
RSS_GROWTH_MB = 100
#: Seconds a job may take to finish before the test gives up on it.
JOB_TIMEOUT_S = 60.0


@contextlib.contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a daemon thread.

    Yields
    ------
    str
        The base URL, e.g. ``http://127.0.0.1:43521``.
    """
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]  # port=0: the OS chose it
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the uvicorn test server did not stop"


def rss_mb() -> float:
    """Resident memory of this process (which runs the server), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def scan(tiny_cohort) -> Path:
    """One already-registered (MNI-space, 4 mm) scan of the tiny cohort."""
    return sorted(tiny_cohort.glob("sub-*/anat/sub-*_T1w.nii.gz"))[0]


@pytest.fixture(scope="module")
def expected(tiny_run, scan) -> dict[str, float]:
    """The probabilities ``brainmaps predict`` gives the scan (computed before the server
    starts, so its memory is not counted in the load test's growth)."""
    table = predict_run(tiny_run, [scan], device="cpu")
    return {c[2:]: float(table[c].iloc[0]) for c in table.columns if c.startswith("p_")}


class Gate:
    """Hold the first job in ``process`` until :meth:`open` (or 60 s).

    With ``workers=1, max_queued=2`` the server takes 3 uploads at a time; a job counts
    from the moment its upload is accepted until it ends. A tiny-cohort job takes well
    under a second, so 5 "concurrent" uploads from 5 client threads could be spread out
    enough that a job ends before the 5th upload arrives, and no 503 would happen. While
    the first job is held, nothing ends: of the first 5 uploads exactly 3 are admitted and
    2 refused, whatever the timing. The later batches run ungated.
    """

    def __init__(self, engine: Engine) -> None:
        self._process = engine.process
        self._event = threading.Event()
        self._first = threading.Lock()
        engine.process = self.process  # instance attribute: shadows the method

    def process(self, *args, **kwargs):
        if self._first.acquire(blocking=False):  # only the first call waits
            self._event.wait(timeout=60)
        return self._process(*args, **kwargs)

    def open(self) -> None:
        self._event.set()


def upload(client: httpx.Client, data: bytes, name: str) -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "application/gzip")})


def wait_done(client: httpx.Client, job_id: str, seen: list[int]) -> dict:
    """Poll a job until it ends; return its final status."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        response = client.get(f"/jobs/{job_id}")
        seen.append(response.status_code)
        assert response.status_code == 200, response.text
        status = response.json()
        if status["status"] in ("done", "failed"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} did not end: {status}"
        time.sleep(0.05)


def check_result(client: httpx.Client, job_id: str, expected: dict, seen: list[int]) -> None:
    response = client.get(f"/jobs/{job_id}/result")
    seen.append(response.status_code)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["space"] == "mni"
    probs = result["probabilities"]
    assert set(probs) == set(expected)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    for c, p in expected.items():
        assert probs[c] == pytest.approx(p, abs=1e-6), (c, probs, expected)
    assert result["maps"] == ["gradient"]


def test_bounded_queue_under_load_keeps_results_right_and_memory_flat(
    tiny_run, scan, expected, tmp_path
):
    engine = Engine(tiny_run, methods=["gradient"], device="cpu")
    root = tmp_path / "jobs"
    app = create_app(engine, ServeSettings(workers=1, max_queued=2, root=root))
    data = scan.read_bytes()
    seen: list[int] = []  # every status code the server answered

    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        # warm-up: the first job loads the template, the kernels and the allocator's
        # pools; memory is measured from after it
        first = upload(client, data, scan.name)
        assert first.status_code == 202, first.text
        check_result(client, wait_done(client, first.json()["id"], seen)["id"], expected, seen)
        gc.collect()
        rss_warm = rss_mb()

        # 4 batches of 5 concurrent uploads; each batch waits for the jobs of the one before
        # to end, so that it meets the full capacity (3) again rather than a queue still
        # busy with them (then nearly every upload after the first batch would be refused)
        gate = Gate(engine)  # holds the first job of the first batch (see Gate)
        accepted: list[str] = []
        refused: list[httpx.Response] = []
        clients = [httpx.Client(base_url=url, timeout=60) for _ in range(CONCURRENT)]
        try:
            with ThreadPoolExecutor(CONCURRENT) as pool:
                for batch in range(N_UPLOADS // CONCURRENT):
                    name = f"scan{batch}.nii.gz"
                    responses = list(pool.map(lambda c, n=name: upload(c, data, n), clients))
                    codes = [r.status_code for r in responses]
                    seen.extend(codes)
                    if batch == 0:
                        # nothing can have ended while the first job is held
                        assert sorted(codes) == [202] * 3 + [503] * 2, codes
                        gate.open()
                    for response in responses:
                        assert response.status_code in (202, 503), response.text
                        if response.status_code == 202:
                            accepted.append(response.json()["id"])
                            wait_done(client, accepted[-1], seen)
                        else:
                            refused.append(response)
        finally:
            gate.open()
            for c in clients:
                c.close()

        assert accepted and refused
        for response in refused:
            assert set(response.json()) == {"error"}
            assert isinstance(response.json()["error"], str)
            assert response.headers["Retry-After"].isdigit()
            assert int(response.headers["Retry-After"]) >= 1

        for job_id in accepted:
            status = wait_done(client, job_id, seen)
            assert status["status"] == "done", status
            check_result(client, job_id, expected, seen)

        gc.collect()
        growth = rss_mb() - rss_warm
        print(
            f"RSS after warm-up {rss_warm:.0f} MB, growth over {N_UPLOADS} uploads "
            f"({len(accepted)} accepted) {growth:+.1f} MB"
        )
        assert growth < RSS_GROWTH_MB, f"RSS grew by {growth:.0f} MB"

        # the inputs are deleted when a job ends; its outputs stay until retention
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        assert {p.name for p in folders} == {first.json()["id"], *accepted}
        inputs = [p for p in root.rglob("*") if re.fullmatch(r"scan-\d+\.nii(\.gz)?", p.name)]
        assert inputs == []
        assert not list(root.rglob("upload.bin")) and not list(root.rglob(".scan-*"))
        for folder in folders:
            names = sorted(p.name for p in folder.iterdir())
            assert len(names) == 2, names
            assert names[0].endswith("_gradient.nii.gz") and names[1].endswith("_scan.nii.gz")

        health = client.get("/health")
        seen.append(health.status_code)
        assert health.json()["active_jobs"] == 0

    assert not [c for c in seen if c >= 500 and c != 503], sorted(set(seen))


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (status, headers, body) from a raw socket."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before the headers: {buffer!r}")
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def test_a_stalled_upload_gets_408_and_does_not_block_the_server(tiny_run, tmp_path):
    engine = Engine(tiny_run, methods=["gradient"], device="cpu")
    settings = ServeSettings(idle_timeout_s=1, root=tmp_path / "jobs")
    app = create_app(engine, settings)
    boundary = "slowclientboundary"
    body_start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="slow.nii.gz"\r\nContent-Type: application/gzip\r\n\r\n\x1f\x8b'
    ).encode()

    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(
                (
                    f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    "Content-Length: 100000\r\n\r\n"
                ).encode()
                + body_start
            )
            sent = time.monotonic()
            # meanwhile the server answers others: active_jobs 1 says /health was answered
            # while the stalled upload still held its slot (it is freed with the 408)
            with httpx.Client(base_url=url, timeout=5) as client:
                health = client.get("/health")
            assert health.status_code == 200
            assert health.json()["active_jobs"] == 1

            status, headers, body = _read_response(sock)
            waited = time.monotonic() - sent
        assert status == 408, body
        assert headers["content-type"].startswith("application/json")
        assert "stalled" in json.loads(body)["error"]
        assert 0.9 <= waited < 5, f"answered after {waited:.1f} s (idle timeout 1 s)"

        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/health").json()["active_jobs"] == 0  # the slot is freed
        assert list((tmp_path / "jobs").iterdir()) == []  # its folder is deleted


def test_a_trickling_upload_is_dropped_for_its_rate(tiny_run, tmp_path):
    """A byte every 0.3 s never trips the idle timeout (1 s) but is far below the minimum
    rate: after the first second the server answers 408 instead of holding the slot."""
    engine = Engine(tiny_run, methods=["gradient"], device="cpu")
    settings = ServeSettings(idle_timeout_s=1, min_rate_bytes_s=1024, root=tmp_path / "jobs")
    boundary = "tricklingboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="slow.nii.gz"\r\n\r\n'
    ).encode()
    with running_server(create_app(engine, settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(
                (
                    f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    "Content-Length: 100000\r\n\r\n"
                ).encode()
                + head
            )
            start = time.monotonic()
            sock.settimeout(0.3)
            answer = b""
            while time.monotonic() - start < 10 and b"\r\n\r\n" not in answer:
                try:
                    sock.sendall(b"\0")
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
            sock.settimeout(5)
            status, _, body = _read_response_after(sock, answer)
        assert status == 408, body
        assert "too slow" in json.loads(body)["error"]
        assert time.monotonic() - start < 6
        assert list((tmp_path / "jobs").iterdir()) == []


def _read_response_after(sock: socket.socket, data: bytes):
    """Status and body of the HTTP response whose first bytes are ``data``."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("content-length", len(body)))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body.decode()
