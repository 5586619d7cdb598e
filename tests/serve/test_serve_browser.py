"""The page of ``brainmaps serve`` in a real browser: Debian's Chromium driven by Playwright.

Playwright's Python package only drives the browser; it never downloads one (no
``playwright install``). WebGL runs on SwiftShader (``--enable-unsafe-swiftshader``), so
the viewer's canvas can be read back. Skipped, with the reason, where Chromium or the
Playwright package is missing; the NiiVue bundle must be there whenever npm is (the
project's set-up installs it).

Set ``BRAINMAPS_SERVE_SCREENSHOT=path.png`` to keep the page's screenshot (the README's
picture is made that way).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is absent")

import uvicorn  # noqa: E402

from brainmaps.exceptions import ConfigError  # noqa: E402
from brainmaps.reports.browser import find_chromium  # noqa: E402
from brainmaps.serve.app import ServeSettings, create_app, viewer_bundled  # noqa: E402
from brainmaps.serve.engine import Engine  # noqa: E402
from brainmaps.training.ensembles import predict_run  # noqa: E402

pytestmark = pytest.mark.slow

ARGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _chromium() -> str:
    try:
        return find_chromium()
    except ConfigError as err:
        pytest.skip(f"no Chromium for the browser test: {err}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    chromium = _chromium()
    if not viewer_bundled():
        if shutil.which("npm"):
            pytest.fail("the NiiVue bundle is missing although npm is installed: run 'make viewer'")
        pytest.skip("npm is absent, so the NiiVue viewer could not be installed")
    root = tmp_path_factory.mktemp("browser_jobs") / "jobs"
    app = create_app(Engine(tiny_run, methods=["hires_cam", "gradient"]), ServeSettings(root=root))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.time() + 30
    while not srv.started and time.time() < end:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", chromium
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(server):
    _, chromium = server
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        yield b
        b.close()


def _pixels(png: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(png), format="png")[..., :3]


def _warm(pixels: np.ndarray) -> int:
    """Pixels of the map's warm colour scale (red clearly above blue, not grey)."""
    return int(((pixels[..., 0] - pixels[..., 2]) > 0.35).sum())


def test_upload_shows_the_prediction_and_the_map(server, browser, tiny_run, tiny_cohort, tmp_path):
    url, _ = server
    scan = tiny_cohort / "sub-0002" / "anat" / "sub-0002_T1w.nii.gz"
    page = browser.new_page(viewport={"width": 1000, "height": 1300})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('fold models')")
    page.set_input_files("#file", str(scan))
    page.wait_for_selector(".probability", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#stages li.done').length === 4")

    shown = {
        el.get_attribute("data-class"): float(el.get_attribute("data-value"))
        for el in page.query_selector_all(".probability")
    }
    expected = predict_run(tiny_run, [scan]).iloc[0]
    for name in ("control", "patient"):
        assert shown[name] == pytest.approx(expected[f"p_{name}"], abs=1e-6)
        text = page.inner_text(f".probability[data-class='{name}']")
        assert text == f"{expected[f'p_{name}']:.3f}"
    assert page.inner_text(".call-value") == expected["predicted"]

    # the viewer drew the scan and the map over it
    page.wait_for_function("!document.getElementById('viewer-panel').hidden", timeout=30_000)
    time.sleep(1.5)  # NiiVue draws on the next animation frames
    canvas = page.locator("#viewer")
    pixels = _pixels(canvas.screenshot())
    assert pixels.std() > 0.1, "the viewer's canvas is blank"
    lit = (np.abs(pixels - pixels[2, 2]).sum(axis=-1) > 0.1).mean()
    assert lit > 0.2, f"only {lit:.0%} of the canvas differs from its background"
    warm = _warm(pixels)
    assert warm > 500, f"no map overlay drawn ({warm} warm pixels)"

    # the opacity slider hides the map
    page.locator("#opacity").fill("0")
    time.sleep(1.0)
    hidden = _warm(_pixels(canvas.screenshot()))
    assert hidden < warm / 4, (warm, hidden)
    page.locator("#opacity").fill("0.6")
    time.sleep(0.5)

    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot), full_page=True)
    keep = os.environ.get("BRAINMAPS_SERVE_SCREENSHOT")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, keep)
    assert shot.stat().st_size > 50_000
    assert errors == [], errors
    outside = [u for u in requests if not u.startswith((url, "data:", "blob:"))]
    assert outside == [], f"the page fetched from outside the server: {outside}"
    page.close()


def test_bad_upload_shows_a_clear_message(server, browser, tmp_path):
    url, _ = server
    bad = tmp_path / "broken_T1w.nii.gz"
    bad.write_bytes(b"this is not a scan" * 50)
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('fold models')")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])", timeout=20_000)
    message = page.inner_text("#error")
    assert "broken_T1w.nii.gz" in message and "expected a NIfTI" in message
    assert message.count("broken_T1w.nii.gz") == 1  # named once, not twice
    assert page.is_hidden("#result-panel")
    page.close()
